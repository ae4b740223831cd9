//! Guests of a few bytes, booted with `-kernel` as multiboot (a.out kludge)
//! images: the accelerator probe's, which proves guest code runs, and test
//! guests that print on the serial console. They end QEMU through the
//! `isa-debug-exit` device ([`crate::Machine::debug_exit`]): writing 0x20
//! to its port makes QEMU exit with status (0x20 << 1) | 1 = 65.
//!
//! Booting a real system is not this module's business.

/// The status QEMU exits with when a guest of [`image`] exits.
pub const EXIT_STATUS: i32 = 65;

/// The `-device` value of the exit port the guests write to.
pub(crate) const DEBUG_EXIT_DEVICE: &str = "isa-debug-exit,iobase=0xf4,iosize=0x04";

/// The multiboot header: everything is loaded at 1 MiB, and the code
/// starts right after the header.
const HEADER: [u8; 32] = [
    0x02, 0xb0, 0xad, 0x1b, // magic 0x1badb002
    0x00, 0x00, 0x01, 0x00, // flags: the address fields below are valid
    0xfe, 0x4f, 0x51, 0xe4, // checksum: -(magic + flags)
    0x00, 0x00, 0x10, 0x00, // header_addr 0x100000
    0x00, 0x00, 0x10, 0x00, // load_addr 0x100000
    0x00, 0x00, 0x00, 0x00, // load_end_addr: the whole file
    0x00, 0x00, 0x00, 0x00, // bss_end_addr: no bss
    0x20, 0x00, 0x10, 0x00, // entry_addr 0x100020
];

/// A guest that writes `serial` to the first serial port, then exits QEMU
/// with [`EXIT_STATUS`] if `exit` is set, or halts for ever.
pub fn image(serial: &[u8], exit: bool) -> Vec<u8> {
    let mut image = HEADER.to_vec();
    if !serial.is_empty() {
        image.extend_from_slice(&[0x66, 0xba, 0xf8, 0x03]); // mov dx, 0x3f8
        for byte in serial {
            image.extend_from_slice(&[0xb0, *byte, 0xee]); // mov al, byte; out dx, al
        }
    }
    if exit {
        image.extend_from_slice(&[0xb0, 0x20, 0xe6, 0xf4]); // mov al, 0x20; out 0xf4, al
    }
    image.extend_from_slice(&[0xf4, 0xeb, 0xfd]); // hlt; jmp back to hlt
    image
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_checksum_holds() {
        let word = |i: usize| u32::from_le_bytes(HEADER[i..i + 4].try_into().unwrap());
        assert_eq!(word(0), 0x1bad_b002);
        assert_eq!(word(0).wrapping_add(word(4)).wrapping_add(word(8)), 0);
        assert_eq!(word(28), word(12) + HEADER.len() as u32);
    }

    #[test]
    fn the_probe_guest_only_exits() {
        assert_eq!(
            image(b"", true)[32..],
            [0xb0, 0x20, 0xe6, 0xf4, 0xf4, 0xeb, 0xfd]
        );
    }
}
