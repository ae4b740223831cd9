//! The Unified Kernel Image: systemd's EFI stub with the kernel, initrd,
//! command line and os-release appended as PE sections, one file that
//! UEFI firmware runs directly (UAPI Group, "Unified Kernel Image").
//!
//! The stub is read with `object`; its headers and sections are kept as
//! they are, and the new section headers and data are written here:
//! section headers go into the zero padding between the stub's section
//! table and its first section's data, each new section's virtual address
//! follows the previous one at `SectionAlignment`, its data follows the
//! stub's at `FileAlignment`. The sections come in the order systemd's
//! `ukify` writes them, `.linux` last: the kernel is given a virtual size of
//! its own `SizeOfImage` (the room it decompresses into) and nothing may
//! follow it in that room (systemd issue 34578). A stub whose header
//! padding cannot hold the new section headers is refused, not rearranged.
//!
//! The header's sizes follow the PE format: the new data sections add their
//! file-aligned sizes to `SizeOfInitializedData`, `.linux` (code, as `ukify`
//! marks it) to `SizeOfCode`; `SizeOfImage` ends after `.linux`'s room. The
//! PE checksum is computed, where `ukify` writes zero: firmware ignores it,
//! but the stub's own would be stale, and PE tools check it. That costs a
//! second read of the kernel and initrd. Nothing varies between two writes:
//! the stub's timestamp is kept and no other is written.
//!
//! Deliberately left out: Secure Boot signing, `.sbat` merging, `.splash`,
//! `.dtb` and PCR signatures (`.pcrsig`, `.pcrpkey`). Where the stub and
//! kernel come from, and what the command line says, is the builder's.

use std::fs::File;
use std::io::{self, Read, Write};
use std::mem::{offset_of, size_of, size_of_val};
use std::path::{Path, PathBuf};

use object::pe::{
    self, ImageFileHeader, ImageNtHeaders64, ImageOptionalHeader64, ImageSectionHeader,
};
use object::read::pe::{ImageNtHeaders, ImageOptionalHeader};
use object::{LittleEndian as LE, U16, U32, pod};

/// What a UKI is made of. Text sections are written as given, without a
/// terminating NUL, as `ukify` writes them; an empty one is left out.
#[derive(Clone, Copy, Debug)]
pub struct UkiInputs<'a> {
    /// systemd's EFI stub (`linuxx64.efi.stub` from `systemd-boot-efi`).
    pub stub: &'a [u8],
    /// `.osrel`: os-release text, which boot menus show.
    pub osrel: &'a [u8],
    /// `.cmdline`: the kernel command line.
    pub cmdline: &'a [u8],
    /// `.uname`: the kernel release, as `uname -r` prints it.
    pub uname: Option<&'a [u8]>,
    /// `.linux`: the kernel (a bzImage), streamed from its file.
    pub linux: &'a Path,
    /// `.initrd`: streamed from its file.
    pub initrd: &'a Path,
}

#[derive(Debug, thiserror::Error)]
pub enum UkiError {
    #[error("the EFI stub ({size} bytes) is not a PE image: {reason}")]
    StubNotPe { size: usize, reason: String },
    #[error("the EFI stub is not a PE32+ x86-64 image: {reason}")]
    StubNotX64 { reason: String },
    #[error(
        "the EFI stub is signed (it has a certificate table); a UKI is signed as a whole, after it is written"
    )]
    StubSigned,
    #[error("the EFI stub already has a {name} section")]
    StubHasSection { name: String },
    #[error(
        "the EFI stub has no room for {needed} more section headers: its section table ends at {table_end:#x} and its first section's data starts at {first_data:#x}"
    )]
    NoRoomForHeaders {
        needed: usize,
        table_end: u64,
        first_data: u64,
    },
    #[error(
        "the EFI stub has data at {offset:#x}, where the new section headers would go (its header padding must be zero)"
    )]
    HeaderPaddingNotZero { offset: u64 },
    #[error("reading the {what} {}: {source}", path.display())]
    Input {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("the {what} {} changed while the UKI was being written", path.display())]
    InputChanged { what: &'static str, path: PathBuf },
    #[error(
        "the kernel {} or the initrd {} changed while the UKI was being written",
        linux.display(),
        initrd.display()
    )]
    ContentChanged { linux: PathBuf, initrd: PathBuf },
    #[error(
        "the UKI would be larger than a PE image can address (4 GiB) with the {section} section of {size} bytes"
    )]
    TooLarge { section: &'static str, size: u64 },
    #[error("writing the UKI: {0}")]
    Write(io::Error),
}

/// Where one section the writer added lies in the UKI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UkiSection {
    pub name: &'static str,
    /// Relative to the image base, as the section header says.
    pub virtual_address: u32,
    pub virtual_size: u32,
    pub file_offset: u32,
    /// The content's length; the file holds it padded to `FileAlignment`.
    pub size: u32,
}

/// Writes the UKI of `inputs` to `out`; returns the bytes written.
pub fn write_uki(inputs: &UkiInputs, out: &mut impl Write) -> Result<u64, UkiError> {
    Uki::plan(inputs)?.write(out)
}

/// A UKI laid out but not yet written: its size is known before a byte is
/// written, for writers that need it up front (a FAT directory entry).
#[derive(Debug)]
pub struct Uki<'a> {
    /// The stub's headers (with the new section headers and sizes, checksum
    /// zero) and its sections' data.
    head: Vec<u8>,
    checksum_offset: usize,
    sections: Vec<Planned<'a>>,
    size: u64,
    linux: &'a Path,
    initrd: &'a Path,
}

#[derive(Debug)]
struct Planned<'a> {
    layout: UkiSection,
    content: Content<'a>,
}

#[derive(Debug)]
enum Content<'a> {
    Bytes(&'a [u8]),
    File { what: &'static str, path: &'a Path },
}

impl<'a> Uki<'a> {
    /// Reads the stub's headers and the sizes of the kernel and initrd, and
    /// lays the UKI out.
    pub fn plan(inputs: &UkiInputs<'a>) -> Result<Uki<'a>, UkiError> {
        let stub = Stub::parse(inputs.stub)?;
        let linux_len = file_len("kernel", inputs.linux)?;
        let initrd_len = file_len("initrd", inputs.initrd)?;
        let linux_in_memory = kernel_size_of_image(inputs.linux)?;

        let data = pe::IMAGE_SCN_CNT_INITIALIZED_DATA | pe::IMAGE_SCN_MEM_READ;
        // ukify marks the kernel as code: old kernels booted through the EFI
        // handover protocol run where the stub finds them.
        let code = pe::IMAGE_SCN_CNT_CODE | pe::IMAGE_SCN_MEM_READ;
        let mut wanted = vec![
            Wanted::bytes(".osrel", inputs.osrel, data),
            Wanted::bytes(".cmdline", inputs.cmdline, data),
        ];
        if let Some(uname) = inputs.uname {
            wanted.push(Wanted::bytes(".uname", uname, data));
        }
        wanted.push(Wanted {
            name: ".initrd",
            content: Content::File {
                what: "initrd",
                path: inputs.initrd,
            },
            len: initrd_len,
            virtual_len: initrd_len,
            flags: data,
        });
        wanted.push(Wanted {
            name: ".linux",
            content: Content::File {
                what: "kernel",
                path: inputs.linux,
            },
            len: linux_len,
            virtual_len: linux_len.max(linux_in_memory),
            flags: code,
        });
        wanted.retain(|section| section.len > 0);

        if linux_len == 0 {
            return Err(UkiError::Input {
                what: "kernel",
                path: inputs.linux.to_path_buf(),
                source: io::Error::new(io::ErrorKind::InvalidData, "the file is empty"),
            });
        }
        for Wanted { name, .. } in &wanted {
            if stub.has_section(name) {
                return Err(UkiError::StubHasSection {
                    name: name.to_string(),
                });
            }
        }

        let file_alignment = u64::from(stub.file_alignment);
        let section_alignment = u64::from(stub.section_alignment);
        let mut file_offset = align(stub.kept as u64, file_alignment);
        let mut virtual_address = stub.first_free_virtual_address();
        let mut size_of_code = u64::from(stub.size_of_code);
        let mut size_of_initialized_data = u64::from(stub.size_of_initialized_data);
        let mut headers = Vec::new();
        let mut sections = Vec::new();
        for Wanted {
            name,
            content,
            len,
            virtual_len,
            flags,
        } in wanted
        {
            let raw_len = align(len, file_alignment);
            if flags.contains(pe::IMAGE_SCN_CNT_CODE) {
                size_of_code += raw_len;
            } else {
                size_of_initialized_data += raw_len;
            }
            let fits = |value: u64| {
                u32::try_from(value).map_err(|_| UkiError::TooLarge {
                    section: name,
                    size: len,
                })
            };
            let layout = UkiSection {
                name,
                virtual_address: fits(virtual_address)?,
                virtual_size: fits(virtual_len)?,
                file_offset: fits(file_offset)?,
                size: fits(len)?,
            };
            headers.push(section_header(name, &layout, fits(raw_len)?, flags));
            file_offset += raw_len;
            virtual_address = align(virtual_address + virtual_len, section_alignment);
            fits(file_offset)?;
            sections.push(Planned { layout, content });
        }
        let last = sections
            .last()
            .map_or(".linux", |section| section.layout.name);
        let fits = |value: u64| {
            u32::try_from(value).map_err(|_| UkiError::TooLarge {
                section: last,
                size: file_offset,
            })
        };
        let fields = HeaderFields {
            size_of_code: fits(size_of_code)?,
            size_of_initialized_data: fits(size_of_initialized_data)?,
            size_of_image: fits(virtual_address)?,
        };
        Ok(Uki {
            head: stub.head_with(&headers, fields)?,
            checksum_offset: stub.checksum_offset(),
            sections,
            size: file_offset,
            linux: inputs.linux,
            initrd: inputs.initrd,
        })
    }

    /// The UKI's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The sections added to the stub, in file order.
    pub fn sections(&self) -> impl Iterator<Item = &UkiSection> {
        self.sections.iter().map(|section| &section.layout)
    }

    /// Writes the UKI; returns the bytes written. The kernel and initrd are
    /// read twice: once for the PE checksum, which the headers carry before
    /// them, and once to write them. Should they change in between, the
    /// write fails.
    pub fn write(&self, out: &mut impl Write) -> Result<u64, UkiError> {
        let checksum = self.emit(&mut io::sink(), 0)?;
        if self.emit(out, checksum)? != checksum {
            return Err(UkiError::ContentChanged {
                linux: self.linux.to_path_buf(),
                initrd: self.initrd.to_path_buf(),
            });
        }
        Ok(self.size)
    }

    /// Writes the UKI with `checksum` in its header; returns the checksum
    /// of what it wrote (computed with the checksum field as zero, as the
    /// PE format defines it).
    fn emit(&self, out: &mut impl Write, checksum: u32) -> Result<u32, UkiError> {
        let mut sum = PeChecksum::default();
        sum.update(&self.head);
        let mut head = self.head.clone();
        head[self.checksum_offset..self.checksum_offset + 4]
            .copy_from_slice(&checksum.to_le_bytes());
        out.write_all(&head).map_err(UkiError::Write)?;
        let mut position = head.len() as u64;
        for section in &self.sections {
            let start = u64::from(section.layout.file_offset);
            write_zeros(out, &mut sum, start - position)?;
            match section.content {
                Content::Bytes(bytes) => {
                    sum.update(bytes);
                    out.write_all(bytes).map_err(UkiError::Write)?;
                }
                Content::File { what, path } => {
                    let size = u64::from(section.layout.size);
                    crate::stream_file(path, size, true, |chunk| {
                        sum.update(chunk);
                        out.write_all(chunk).map_err(UkiError::Write)
                    })
                    .map_err(|error| match error {
                        crate::Streamed::Read(source) => UkiError::Input {
                            what,
                            path: path.to_path_buf(),
                            source,
                        },
                        crate::Streamed::Length { .. } => UkiError::InputChanged {
                            what,
                            path: path.to_path_buf(),
                        },
                        crate::Streamed::Put(error) => error,
                    })?;
                }
            }
            position = start + u64::from(section.layout.size);
        }
        write_zeros(out, &mut sum, self.size - position)?;
        Ok(sum.finish(self.size))
    }
}

/// A section to add: its content, its length in the file and in memory.
struct Wanted<'a> {
    name: &'static str,
    content: Content<'a>,
    len: u64,
    virtual_len: u64,
    flags: pe::SectionFlags,
}

impl<'a> Wanted<'a> {
    fn bytes(name: &'static str, bytes: &'a [u8], flags: pe::SectionFlags) -> Wanted<'a> {
        let len = bytes.len() as u64;
        Wanted {
            name,
            content: Content::Bytes(bytes),
            len,
            virtual_len: len,
            flags,
        }
    }
}

fn section_header(
    name: &str,
    layout: &UkiSection,
    raw_len: u32,
    flags: pe::SectionFlags,
) -> ImageSectionHeader {
    ImageSectionHeader {
        name: section_name(name),
        virtual_size: U32::new(LE, layout.virtual_size),
        virtual_address: U32::new(LE, layout.virtual_address),
        size_of_raw_data: U32::new(LE, raw_len),
        pointer_to_raw_data: U32::new(LE, layout.file_offset),
        pointer_to_relocations: U32::new(LE, 0),
        pointer_to_linenumbers: U32::new(LE, 0),
        number_of_relocations: U16::new(LE, 0),
        number_of_linenumbers: U16::new(LE, 0),
        characteristics: U32::new(LE, flags),
    }
}

fn section_name(name: &str) -> [u8; 8] {
    let mut bytes = [0; 8];
    bytes[..name.len()].copy_from_slice(name.as_bytes());
    bytes
}

fn align(value: u64, alignment: u64) -> u64 {
    value.div_ceil(alignment) * alignment
}

fn write_zeros(out: &mut impl Write, sum: &mut PeChecksum, count: u64) -> Result<(), UkiError> {
    sum.zeros(count);
    io::copy(&mut io::repeat(0).take(count), out)
        .map(|_| ())
        .map_err(UkiError::Write)
}

fn file_len(what: &'static str, path: &Path) -> Result<u64, UkiError> {
    let metadata = std::fs::metadata(path).map_err(|source| UkiError::Input {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    if !metadata.is_file() {
        return Err(UkiError::Input {
            what,
            path: path.to_path_buf(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"),
        });
    }
    Ok(metadata.len())
}

/// A kernel with an EFI stub of its own is a PE image whose `SizeOfImage`
/// covers the room it decompresses into; 0 for a kernel without one.
fn kernel_size_of_image(path: &Path) -> Result<u64, UkiError> {
    let mut start = Vec::with_capacity(4096);
    File::open(path)
        .and_then(|file| file.take(4096).read_to_end(&mut start))
        .map_err(|source| UkiError::Input {
            what: "kernel",
            path: path.to_path_buf(),
            source,
        })?;
    let Ok(dos) = pe::ImageDosHeader::parse(start.as_slice()) else {
        return Ok(0);
    };
    let mut offset = u64::from(dos.nt_headers_offset());
    match ImageNtHeaders64::parse(start.as_slice(), &mut offset) {
        Ok((nt, _)) => Ok(u64::from(nt.optional_header().size_of_image())),
        Err(_) => Ok(0),
    }
}

/// What the writer needs of the stub.
#[derive(Debug)]
struct Stub<'a> {
    bytes: &'a [u8],
    /// How much of the stub is kept: all of it, less a COFF symbol table at
    /// its end (images should have none; `ukify` strips it too).
    kept: usize,
    strip_symbols: bool,
    file_header_offset: usize,
    optional_header_offset: usize,
    section_table_offset: usize,
    section_names: Vec<[u8; 8]>,
    number_of_sections: u16,
    characteristics: pe::FileFlags,
    /// Where the first section's data starts: the section headers must end
    /// before it.
    first_data: u64,
    size_of_headers: u32,
    size_of_image: u32,
    size_of_code: u32,
    size_of_initialized_data: u32,
    file_alignment: u32,
    section_alignment: u32,
    /// The end of the stub's last section in memory.
    virtual_end: u64,
}

impl<'a> Stub<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Stub<'a>, UkiError> {
        let not_pe = |reason| UkiError::StubNotPe {
            size: bytes.len(),
            reason,
        };
        let not_x64 = |reason: String| UkiError::StubNotX64 { reason };
        let magic =
            object::read::pe::optional_header_magic(bytes).map_err(|e| not_pe(e.to_string()))?;
        if magic != pe::IMAGE_NT_OPTIONAL_HDR64_MAGIC {
            return Err(not_x64(format!(
                "its optional header magic is {magic:#x}, PE32+ is {:#x}",
                pe::IMAGE_NT_OPTIONAL_HDR64_MAGIC
            )));
        }
        let file = object::read::pe::PeFile64::parse(bytes).map_err(|e| not_pe(e.to_string()))?;
        let nt = file.nt_headers();
        let machine = nt.file_header().machine.get(LE);
        if machine != pe::IMAGE_FILE_MACHINE_AMD64 {
            return Err(not_x64(format!(
                "its machine is {machine:#06x}, x86-64 is {:#06x}",
                pe::IMAGE_FILE_MACHINE_AMD64
            )));
        }
        let optional = nt.optional_header();
        let subsystem = optional.subsystem();
        if subsystem != pe::IMAGE_SUBSYSTEM_EFI_APPLICATION {
            return Err(not_x64(format!(
                "its subsystem is {}, an EFI application is {}",
                subsystem.0,
                pe::IMAGE_SUBSYSTEM_EFI_APPLICATION.0
            )));
        }
        if file
            .data_directory(pe::IMAGE_DIRECTORY_ENTRY_SECURITY)
            .is_some_and(|directory| directory.virtual_address.get(LE) != 0)
        {
            return Err(UkiError::StubSigned);
        }
        let (file_alignment, section_alignment) =
            (optional.file_alignment(), optional.section_alignment());
        if !file_alignment.is_power_of_two() || !section_alignment.is_power_of_two() {
            return Err(not_x64(format!(
                "its alignments are not powers of two (file {file_alignment:#x}, sections {section_alignment:#x})"
            )));
        }

        let file_header_offset = file.dos_header().nt_headers_offset() as usize + 4;
        let optional_header_offset = file_header_offset + size_of::<ImageFileHeader>();
        let section_table_offset =
            optional_header_offset + usize::from(nt.file_header().size_of_optional_header.get(LE));
        let table = file.section_table();
        let mut data_end = 0u64;
        let mut first_data = u64::MAX;
        let mut virtual_end = 0u64;
        for header in table.iter() {
            let (start, len) = (
                u64::from(header.pointer_to_raw_data.get(LE)),
                u64::from(header.size_of_raw_data.get(LE)),
            );
            if len > 0 {
                first_data = first_data.min(start);
                data_end = data_end.max(start + len);
            }
            // A virtual size of 0 means the raw size, as loaders read it.
            let virtual_len = match header.virtual_size.get(LE) {
                0 => len,
                size => u64::from(size),
            };
            virtual_end = virtual_end.max(u64::from(header.virtual_address.get(LE)) + virtual_len);
        }
        if data_end > bytes.len() as u64 {
            return Err(not_pe("its sections' data runs past its end".into()));
        }

        let symbols = u64::from(nt.file_header().pointer_to_symbol_table.get(LE));
        let mut kept = bytes.len();
        let mut strip_symbols = false;
        if symbols != 0 && symbols >= data_end {
            let count = u64::from(nt.file_header().number_of_symbols.get(LE));
            let strings = symbols + count * u64::from(pe::IMAGE_SIZEOF_SYMBOL as u32);
            let strings_len = usize::try_from(strings)
                .ok()
                .and_then(|at| bytes.get(at..at + 4))
                .map(|len| u64::from(u32::from_le_bytes([len[0], len[1], len[2], len[3]])));
            if strings_len.is_some_and(|len| strings + len == bytes.len() as u64) {
                kept = symbols as usize;
                strip_symbols = true;
            }
        }
        let size_of_headers = optional.size_of_headers();
        if (size_of_headers as usize) > kept || (section_table_offset as u64) > first_data {
            return Err(not_pe("its headers overlap its sections' data".into()));
        }

        Ok(Stub {
            bytes,
            kept,
            strip_symbols,
            file_header_offset,
            optional_header_offset,
            section_table_offset,
            section_names: table.iter().map(|header| header.name).collect(),
            number_of_sections: nt.file_header().number_of_sections.get(LE),
            characteristics: nt.file_header().characteristics.get(LE),
            first_data: first_data.min(kept as u64),
            size_of_headers,
            size_of_image: optional.size_of_image(),
            size_of_code: optional.size_of_code(),
            size_of_initialized_data: optional.size_of_initialized_data(),
            file_alignment,
            section_alignment,
            virtual_end,
        })
    }

    fn has_section(&self, name: &str) -> bool {
        self.section_names.contains(&section_name(name))
    }

    /// Where the first new section goes in memory: after every section of
    /// the stub and after the image it declares.
    fn first_free_virtual_address(&self) -> u64 {
        align(
            self.virtual_end.max(u64::from(self.size_of_image)),
            u64::from(self.section_alignment),
        )
    }

    /// The stub's headers and sections' data, with `headers` appended to
    /// its section table, the header fields they change set, and any symbol
    /// table at its end stripped; checks the new headers fit.
    fn head_with(
        &self,
        headers: &[ImageSectionHeader],
        fields: HeaderFields,
    ) -> Result<Vec<u8>, UkiError> {
        let header = size_of::<ImageSectionHeader>();
        let old_end = self.section_table_offset + usize::from(self.number_of_sections) * header;
        let new_end = old_end + size_of_val(headers);
        let size_of_headers = align(
            (new_end as u64).max(u64::from(self.size_of_headers)),
            u64::from(self.file_alignment),
        );
        // The section table may grow into the padding before the first
        // section's data, never into that data.
        if size_of_headers > self.first_data {
            return Err(UkiError::NoRoomForHeaders {
                needed: headers.len(),
                table_end: old_end as u64,
                first_data: self.first_data,
            });
        }
        if let Some(at) = self.bytes[old_end..new_end]
            .iter()
            .position(|&byte| byte != 0)
        {
            return Err(UkiError::HeaderPaddingNotZero {
                offset: (old_end + at) as u64,
            });
        }

        let mut head = self.bytes[..self.kept].to_vec();
        let mut at = old_end;
        for header in headers {
            head[at..at + size_of::<ImageSectionHeader>()].copy_from_slice(pod::bytes_of(header));
            at += size_of::<ImageSectionHeader>();
        }
        // At most a few hundred headers fit before the first section's data.
        let sections = self.number_of_sections + headers.len() as u16;
        let mut file_header =
            |field: usize, value: &[u8]| put(&mut head, self.file_header_offset + field, value);
        file_header(
            offset_of!(ImageFileHeader, number_of_sections),
            &sections.to_le_bytes(),
        );
        if self.strip_symbols {
            let flags = self.characteristics | pe::IMAGE_FILE_LOCAL_SYMS_STRIPPED;
            file_header(
                offset_of!(ImageFileHeader, pointer_to_symbol_table),
                &[0; 4],
            );
            file_header(offset_of!(ImageFileHeader, number_of_symbols), &[0; 4]);
            file_header(
                offset_of!(ImageFileHeader, characteristics),
                &flags.0.to_le_bytes(),
            );
        }
        let optional = |field| self.optional_header_offset + field;
        // Not above first_data, a u32 of the stub's.
        let size_of_headers = size_of_headers as u32;
        for (field, value) in [
            (
                offset_of!(ImageOptionalHeader64, size_of_headers),
                size_of_headers,
            ),
            (
                offset_of!(ImageOptionalHeader64, size_of_code),
                fields.size_of_code,
            ),
            (
                offset_of!(ImageOptionalHeader64, size_of_initialized_data),
                fields.size_of_initialized_data,
            ),
            (
                offset_of!(ImageOptionalHeader64, size_of_image),
                fields.size_of_image,
            ),
            (offset_of!(ImageOptionalHeader64, check_sum), 0),
        ] {
            put(&mut head, optional(field), &value.to_le_bytes());
        }
        Ok(head)
    }

    /// Where the checksum field is in the head.
    fn checksum_offset(&self) -> usize {
        self.optional_header_offset + offset_of!(ImageOptionalHeader64, check_sum)
    }
}

/// The optional header's fields that the new sections change.
#[derive(Debug)]
struct HeaderFields {
    size_of_code: u32,
    size_of_initialized_data: u32,
    size_of_image: u32,
}

fn put(head: &mut [u8], at: usize, bytes: &[u8]) {
    head[at..at + bytes.len()].copy_from_slice(bytes);
}

/// The checksum that the header of the PE image `image` should carry
/// (whatever its CheckSum field holds now); `None` if `image` is not a PE
/// image.
pub fn pe_checksum(image: &[u8]) -> Option<u32> {
    let dos = pe::ImageDosHeader::parse(image).ok()?;
    let field = usize::try_from(dos.nt_headers_offset()).ok()?
        + 4
        + size_of::<ImageFileHeader>()
        + offset_of!(ImageOptionalHeader64, check_sum);
    let (before, rest) = image.split_at_checked(field)?;
    let after = rest.get(4..)?;
    let mut sum = PeChecksum::default();
    sum.update(before);
    sum.update(&[0; 4]);
    sum.update(after);
    Some(sum.finish(image.len() as u64))
}

/// The PE image checksum, as Windows' `CheckSumMappedFile` computes it: the
/// file's 16-bit little-endian words summed with end-around carry (the
/// CheckSum field counting as zero), plus the file's length.
#[derive(Debug, Default)]
struct PeChecksum {
    sum: u64,
    /// A byte whose word's second byte is in the next update.
    odd: Option<u8>,
}

impl PeChecksum {
    fn update(&mut self, mut bytes: &[u8]) {
        if let Some(low) = self.odd.take() {
            match bytes.split_first() {
                Some((&high, rest)) => {
                    self.sum += u64::from(u16::from_le_bytes([low, high]));
                    bytes = rest;
                }
                None => {
                    self.odd = Some(low);
                    return;
                }
            }
        }
        let mut words = bytes.chunks_exact(2);
        for word in &mut words {
            self.sum += u64::from(u16::from_le_bytes([word[0], word[1]]));
        }
        self.odd = words.remainder().first().copied();
    }

    /// `count` zero bytes: they add nothing but shift the word boundary.
    fn zeros(&mut self, count: u64) {
        if count == 0 {
            return;
        }
        let count = match self.odd.take() {
            Some(low) => {
                self.sum += u64::from(low);
                count - 1
            }
            None => count,
        };
        if count % 2 == 1 {
            self.odd = Some(0);
        }
    }

    fn finish(mut self, len: u64) -> u32 {
        if let Some(low) = self.odd.take() {
            self.sum += u64::from(low);
        }
        let mut sum = self.sum;
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        // The length is a u32 in a PE image, which cannot exceed 4 GiB.
        (sum as u32).wrapping_add(len as u32)
    }
}

#[cfg(test)]
mod tests {
    use object::read::pe::PeFile64;
    use object::{Object, ObjectSection};

    use super::*;

    const FILE_HEADER: usize = 0x44;
    const OPTIONAL_HEADER: usize = FILE_HEADER + size_of::<ImageFileHeader>();
    const SECTION_TABLE: usize = OPTIONAL_HEADER + 0xf0;

    /// A minimal stub: one `.text` section whose data starts at
    /// `first_data`, the headers padded with zeros up to it.
    fn fake_stub(first_data: usize) -> Vec<u8> {
        let mut stub = vec![0; first_data + 0x200];
        stub[..2].copy_from_slice(b"MZ");
        put(&mut stub, 0x3c, &0x40u32.to_le_bytes());
        stub[0x40..0x44].copy_from_slice(b"PE\0\0");
        for (field, value) in [
            (offset_of!(ImageFileHeader, machine), 0x8664u16),
            (offset_of!(ImageFileHeader, number_of_sections), 1),
            (offset_of!(ImageFileHeader, size_of_optional_header), 0xf0),
        ] {
            put(&mut stub, FILE_HEADER + field, &value.to_le_bytes());
        }
        type Optional = ImageOptionalHeader64;
        for (field, value) in [
            (offset_of!(Optional, section_alignment), 0x1000u32),
            (offset_of!(Optional, file_alignment), 0x200),
            (offset_of!(Optional, size_of_image), 0x2000),
            (offset_of!(Optional, size_of_headers), first_data as u32),
            (offset_of!(Optional, size_of_code), 0x200),
            (offset_of!(Optional, address_of_entry_point), 0x1000),
            (offset_of!(Optional, number_of_rva_and_sizes), 16),
        ] {
            put(&mut stub, OPTIONAL_HEADER + field, &value.to_le_bytes());
        }
        for (field, value) in [
            (offset_of!(Optional, magic), 0x20bu16),
            (offset_of!(Optional, subsystem), 10),
        ] {
            put(&mut stub, OPTIONAL_HEADER + field, &value.to_le_bytes());
        }
        let text = UkiSection {
            name: ".text",
            virtual_address: 0x1000,
            virtual_size: 0x10,
            file_offset: first_data as u32,
            size: 0x10,
        };
        let flags = pe::IMAGE_SCN_CNT_CODE | pe::IMAGE_SCN_MEM_EXECUTE;
        let text = section_header(".text", &text, 0x200, flags);
        put(&mut stub, SECTION_TABLE, pod::bytes_of(&text));
        stub[first_data] = 0xc3;
        stub
    }

    struct Files {
        dir: tempfile::TempDir,
        linux: PathBuf,
        initrd: PathBuf,
    }

    /// A kernel and an initrd of odd lengths, so that words of the checksum
    /// straddle the padding.
    fn files() -> Files {
        let dir = tempfile::tempdir().unwrap();
        let linux = dir.path().join("vmlinuz");
        let initrd = dir.path().join("initrd.img");
        let bytes = |len: usize, seed: u8| -> Vec<u8> {
            (0..len)
                .map(|i| (i as u8).wrapping_mul(31) ^ seed)
                .collect()
        };
        std::fs::write(&linux, bytes(1001, 0x5a)).unwrap();
        std::fs::write(&initrd, bytes(3 * 1024 * 1024 + 7, 0xa5)).unwrap();
        Files { dir, linux, initrd }
    }

    fn inputs<'a>(stub: &'a [u8], files: &'a Files) -> UkiInputs<'a> {
        UkiInputs {
            stub,
            osrel: b"ID=berth\n",
            cmdline: b"console=ttyS0",
            uname: Some(b"6.1.0-test"),
            linux: &files.linux,
            initrd: &files.initrd,
        }
    }

    fn error_of(inputs: &UkiInputs) -> String {
        match write_uki(inputs, &mut Vec::new()) {
            Ok(_) => panic!("writing the UKI succeeded"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn appends_the_sections_after_the_stubs_linux_last() {
        let stub = fake_stub(0x400);
        let files = files();
        let inputs = inputs(&stub, &files);
        let plan = Uki::plan(&inputs).unwrap();
        let mut out = Vec::new();
        assert_eq!(plan.write(&mut out).unwrap(), out.len() as u64);
        assert_eq!(plan.size(), out.len() as u64);

        let file = PeFile64::parse(out.as_slice()).unwrap();
        let names: Vec<_> = file
            .sections()
            .map(|s| s.name().unwrap().to_string())
            .collect();
        assert_eq!(
            names,
            [".text", ".osrel", ".cmdline", ".uname", ".initrd", ".linux"]
        );
        let linux = std::fs::read(&files.linux).unwrap();
        let initrd = std::fs::read(&files.initrd).unwrap();
        let expected: [&[u8]; 5] = [
            b"ID=berth\n",
            b"console=ttyS0",
            b"6.1.0-test",
            &initrd,
            &linux,
        ];
        let mut previous_end = 0x2000;
        for ((section, planned), content) in
            file.sections().skip(1).zip(plan.sections()).zip(expected)
        {
            assert_eq!(section.data().unwrap(), content, "{}", planned.name);
            let header = section.pe_section();
            assert_eq!(header.virtual_address.get(LE), planned.virtual_address);
            assert_eq!(header.virtual_size.get(LE), planned.virtual_size);
            assert_eq!(header.pointer_to_raw_data.get(LE), planned.file_offset);
            assert_eq!(planned.virtual_address % 0x1000, 0, "{}", planned.name);
            assert_eq!(planned.file_offset % 0x200, 0, "{}", planned.name);
            assert!(planned.virtual_address >= previous_end, "{}", planned.name);
            previous_end = planned.virtual_address + planned.virtual_size;
        }
        let optional = file.nt_headers().optional_header();
        assert_eq!(
            optional.size_of_image(),
            align(previous_end.into(), 0x1000) as u32
        );
        assert_eq!(optional.size_of_headers(), 0x400);
        assert_eq!(optional.check_sum(), pe_checksum(&out).unwrap());
        // The stub's own section is where it was.
        assert_eq!(out[0x400], 0xc3);
        drop(files.dir);
    }

    #[test]
    fn the_same_inputs_give_the_same_bytes() {
        let stub = fake_stub(0x400);
        let files = files();
        let (mut first, mut second) = (Vec::new(), Vec::new());
        write_uki(&inputs(&stub, &files), &mut first).unwrap();
        write_uki(&inputs(&stub, &files), &mut second).unwrap();
        assert!(first == second);
    }

    #[test]
    fn empty_text_sections_are_left_out() {
        let stub = fake_stub(0x400);
        let files = files();
        let inputs = UkiInputs {
            cmdline: b"",
            uname: None,
            ..inputs(&stub, &files)
        };
        let plan = Uki::plan(&inputs).unwrap();
        let names: Vec<_> = plan.sections().map(|section| section.name).collect();
        assert_eq!(names, [".osrel", ".initrd", ".linux"]);
    }

    #[test]
    fn a_symbol_table_at_the_stubs_end_is_stripped() {
        let mut stub = fake_stub(0x400);
        let symbols = stub.len() as u32;
        put(&mut stub, FILE_HEADER + 8, &symbols.to_le_bytes());
        put(&mut stub, FILE_HEADER + 12, &1u32.to_le_bytes());
        stub.extend_from_slice(&[0x11; 18]);
        stub.extend_from_slice(&4u32.to_le_bytes());
        let files = files();
        let mut out = Vec::new();
        write_uki(&inputs(&stub, &files), &mut out).unwrap();
        let file = PeFile64::parse(out.as_slice()).unwrap();
        let header = file.nt_headers().file_header;
        assert_eq!(header.pointer_to_symbol_table.get(LE), 0);
        assert_eq!(header.number_of_symbols.get(LE), 0);
        let osrel = file.section_by_name(".osrel").unwrap();
        assert_eq!(osrel.pe_section().pointer_to_raw_data.get(LE), symbols);
    }

    #[test]
    fn stubs_that_cannot_carry_a_kernel_are_refused() {
        let files = files();
        let check = |stub: &[u8], expected: &str| {
            assert_eq!(error_of(&inputs(stub, &files)), expected);
        };
        check(
            b"#!/bin/sh\n",
            "the EFI stub (10 bytes) is not a PE image: Invalid DOS header size or alignment",
        );
        let mut pe32 = fake_stub(0x400);
        put(&mut pe32, OPTIONAL_HEADER, &0x10bu16.to_le_bytes());
        check(
            &pe32,
            "the EFI stub is not a PE32+ x86-64 image: its optional header magic is 0x10b, PE32+ is 0x20b",
        );
        let mut arm = fake_stub(0x400);
        put(&mut arm, FILE_HEADER, &0xaa64u16.to_le_bytes());
        check(
            &arm,
            "the EFI stub is not a PE32+ x86-64 image: its machine is 0xaa64, x86-64 is 0x8664",
        );
        let mut console = fake_stub(0x400);
        let subsystem = OPTIONAL_HEADER + offset_of!(ImageOptionalHeader64, subsystem);
        put(&mut console, subsystem, &3u16.to_le_bytes());
        check(
            &console,
            "the EFI stub is not a PE32+ x86-64 image: its subsystem is 3, an EFI application is 10",
        );
        let mut signed = fake_stub(0x400);
        let security = OPTIONAL_HEADER + size_of::<ImageOptionalHeader64>() + 4 * 8;
        put(&mut signed, security, &0x600u32.to_le_bytes());
        put(&mut signed, security + 4, &0x10u32.to_le_bytes());
        check(
            &signed,
            "the EFI stub is signed (it has a certificate table); a UKI is signed as a whole, after it is written",
        );
        // The table ends at 0x170 and the data starts at 0x200: room for
        // three headers, and the UKI needs five.
        check(
            &fake_stub(0x200),
            "the EFI stub has no room for 5 more section headers: its section table ends at 0x170 and its first section's data starts at 0x200",
        );
        let mut padding = fake_stub(0x400);
        padding[0x1a0] = 1;
        check(
            &padding,
            "the EFI stub has data at 0x1a0, where the new section headers would go (its header padding must be zero)",
        );
        let mut has_linux = fake_stub(0x400);
        put(&mut has_linux, SECTION_TABLE, &section_name(".linux"));
        check(&has_linux, "the EFI stub already has a .linux section");
    }

    #[test]
    fn missing_and_empty_inputs_are_named() {
        let stub = fake_stub(0x400);
        let files = files();
        let missing = files.dir.path().join("no-initrd");
        let error = error_of(&UkiInputs {
            initrd: &missing,
            ..inputs(&stub, &files)
        });
        assert_eq!(
            error,
            format!(
                "reading the initrd {}: No such file or directory (os error 2)",
                missing.display()
            )
        );
        std::fs::write(&files.linux, b"").unwrap();
        let error = error_of(&inputs(&stub, &files));
        assert_eq!(
            error,
            format!(
                "reading the kernel {}: the file is empty",
                files.linux.display()
            )
        );
    }

    #[test]
    fn a_kernel_that_changes_while_written_fails_the_write() {
        let stub = fake_stub(0x400);
        let files = files();
        let inputs = inputs(&stub, &files);
        let plan = Uki::plan(&inputs).unwrap();
        std::fs::write(&files.linux, b"another kernel").unwrap();
        let error = plan.write(&mut Vec::new()).unwrap_err().to_string();
        let linux = files.linux.display();
        assert_eq!(
            error,
            format!("the kernel {linux} changed while the UKI was being written")
        );

        // Changed between the checksum's pass and the writing one, to
        // content of the same length: the checksums differ.
        std::fs::write(&files.linux, vec![1; 1001]).unwrap();
        let plan = Uki::plan(&inputs).unwrap();
        let mut out = ChangesKernel {
            kernel: &files.linux,
            written: Vec::new(),
        };
        let error = plan.write(&mut out).unwrap_err().to_string();
        let initrd = files.initrd.display();
        assert_eq!(
            error,
            format!(
                "the kernel {linux} or the initrd {initrd} changed while the UKI was being written"
            )
        );
    }

    /// Rewrites the kernel when the UKI's first bytes reach it.
    struct ChangesKernel<'a> {
        kernel: &'a Path,
        written: Vec<u8>,
    }

    impl Write for ChangesKernel<'_> {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            if self.written.is_empty() {
                std::fs::write(self.kernel, vec![2; 1001])?;
            }
            self.written.write(bytes)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_checksum_does_not_depend_on_how_the_bytes_are_split() {
        let bytes: Vec<u8> = (0..1000u32).map(|i| (i * 7919 % 251) as u8).collect();
        let mut whole = PeChecksum::default();
        whole.update(&bytes);
        whole.update(&[0; 5]);
        whole.update(&bytes[..3]);
        let whole = whole.finish(1008);
        let mut pieces = PeChecksum::default();
        for chunk in bytes.chunks(13) {
            pieces.update(chunk);
        }
        pieces.zeros(5);
        pieces.update(&bytes[..1]);
        pieces.update(&bytes[1..3]);
        assert_eq!(pieces.finish(1008), whole);
        // Words sum with the carry folded back in: 0xffff + 0x0002 is
        // 0x0002, and the length (4) is added.
        let mut carry = PeChecksum::default();
        carry.update(&[0xff, 0xff, 0x02, 0x00]);
        assert_eq!(carry.finish(4), 0x0002 + 4);
    }
}
