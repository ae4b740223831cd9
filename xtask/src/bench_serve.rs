//! `cargo xtask bench [RUNS] serve [DIR]`: `berth serve` under load, and
//! nginx (Debian's nginx-light, sendfile on) serving the same directory in
//! the same run.
//!
//! DIR is a build directory; without it, `examples/host.yml` is built to
//! kernel+initrd first. Each round, 100 clients connect at once and each
//! fetches the kernel and then the initrd over one keep-alive connection,
//! with a plain HTTP/1.1 client written here; every byte is compared with
//! the file's. The figure is the bytes of all bodies over the wall time from
//! the first connection to the last byte.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

const CLIENTS: usize = 100;

/// The files every client fetches: name and bytes.
type Files = Vec<(String, Vec<u8>)>;

/// A process stopped with SIGTERM (nginx's master takes its workers down
/// with it; SIGKILL would leave them running) when dropped.
struct Stopped(Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

pub fn bench_serve(berth: &Path, runs: usize, dir: Option<PathBuf>) -> Result<()> {
    let dir = match dir {
        Some(dir) => dir,
        None => build_host(berth)?,
    };
    let (name, files) = kernel_and_initrd(&dir)?;
    let bytes_per_client: usize = files.iter().map(|(_, bytes)| bytes.len()).sum();
    println!(
        "serve: {} ({name}-kernel {:.1} MB, {name}-initrd.img {:.1} MB), {CLIENTS} clients each fetching both over one connection",
        dir.display(),
        files[0].1.len() as f64 / 1e6,
        files[1].1.len() as f64 / 1e6,
    );
    let files = Arc::new(files);

    let (berth_serve, berth_address) = start_berth(berth, &dir)?;
    let scratch = crate::root().join("target/berth-bench/nginx");
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)?;
    let (nginx, nginx_address) = start_nginx(&scratch, &dir)?;

    let mut berth_rates = Vec::new();
    let mut nginx_rates = Vec::new();
    for round in 1..=runs {
        let berth_rate = load(&berth_address, &files)?;
        let nginx_rate = load(&nginx_address, &files)?;
        println!(
            "serve, round {round}: berth serve {berth_rate:.0} MB/s, nginx {nginx_rate:.0} MB/s"
        );
        berth_rates.push(berth_rate);
        nginx_rates.push(nginx_rate);
    }
    drop(berth_serve);
    drop(nginx);
    let median = |mut rates: Vec<f64>| {
        rates.sort_by(f64::total_cmp);
        rates[rates.len() / 2]
    };
    let (berth_rate, nginx_rate) = (median(berth_rates), median(nginx_rates));
    println!(
        "berth serve: median {berth_rate:.0} MB/s; nginx (sendfile on): median {nginx_rate:.0} MB/s; berth/nginx {:.2} ({runs} rounds of {CLIENTS} clients × {:.1} MB, every byte checked)",
        berth_rate / nginx_rate,
        bytes_per_client as f64 / 1e6
    );
    Ok(())
}

/// `examples/host.yml` built to kernel+initrd, with the cache the other
/// benchmarks use.
fn build_host(berth: &Path) -> Result<PathBuf> {
    let out = crate::root().join("target/berth-bench/serve");
    let _ = std::fs::remove_dir_all(&out);
    crate::run(
        Command::new(berth)
            .current_dir(crate::root())
            .env_remove("BERTH_OFFLINE")
            .args(["build", "-f", "kernel+initrd", "-o"])
            .arg(&out)
            .arg("--cache")
            .arg(crate::work().join("cache"))
            .arg("examples/host.yml"),
    )?;
    Ok(out)
}

/// The one build of `dir`: its name, and the names and bytes of its kernel
/// and initrd.
fn kernel_and_initrd(dir: &Path) -> Result<(String, Files)> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("{}", dir.display()))?
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix("-kernel").map(str::to_string))
        .filter(|n| dir.join(format!("{n}-initrd.img")).is_file())
        .collect();
    names.sort();
    let Some(name) = names.into_iter().next() else {
        bail!(
            "{} holds no NAME-kernel with NAME-initrd.img",
            dir.display()
        );
    };
    let files = [format!("{name}-kernel"), format!("{name}-initrd.img")]
        .into_iter()
        .map(|file| {
            let bytes = std::fs::read(dir.join(&file))
                .with_context(|| format!("reading {}", dir.join(&file).display()))?;
            Ok((file, bytes))
        })
        .collect::<Result<_>>()?;
    Ok((name, files))
}

fn start_berth(berth: &Path, dir: &Path) -> Result<(Stopped, String)> {
    let mut child = Command::new(berth)
        .arg("serve")
        .arg(dir)
        .args(["--addr", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()
        .context("starting berth serve")?;
    let stderr = child.stderr.take().context("berth serve's stderr")?;
    let child = Stopped(child);
    let mut lines = BufReader::new(stderr).lines();
    let first = lines.next().context("berth serve said nothing")??;
    let address = first
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .with_context(|| format!("no address in {first:?}"))?
        .to_string();
    // The access log: read, so the server never waits on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Ok((child, address))
}

/// nginx as the current user, everything in `scratch`, serving `dir` on a
/// free loopback port.
fn start_nginx(scratch: &Path, dir: &Path) -> Result<(Stopped, String)> {
    let nginx = ["/usr/sbin/nginx", "nginx"]
        .into_iter()
        .find(|n| Command::new(n).arg("-v").output().is_ok())
        .context("nginx not found: apt-get install nginx-light")?;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let address = format!("127.0.0.1:{port}");
    let dir = dir.canonicalize()?;
    let scratch_path = scratch.display();
    // As root, nginx's workers would switch to `nobody`.
    let user = if crate::is_root() { "user root;\n" } else { "" };
    let conf = format!(
        "{user}worker_processes auto;\n\
         pid {scratch_path}/nginx.pid;\n\
         error_log {scratch_path}/error.log;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n\
         access_log off;\n\
         sendfile on;\n\
         tcp_nopush on;\n\
         keepalive_requests 1000;\n\
         default_type application/octet-stream;\n\
         client_body_temp_path {scratch_path}/body;\n\
         proxy_temp_path {scratch_path}/proxy;\n\
         fastcgi_temp_path {scratch_path}/fastcgi;\n\
         uwsgi_temp_path {scratch_path}/uwsgi;\n\
         scgi_temp_path {scratch_path}/scgi;\n\
         server {{ listen {address}; root {}; }}\n\
         }}\n",
        dir.display()
    );
    std::fs::write(scratch.join("nginx.conf"), conf)?;
    let child = Stopped(
        Command::new(nginx)
            .arg("-p")
            .arg(scratch)
            .arg("-c")
            .arg(scratch.join("nginx.conf"))
            .args(["-g", "daemon off;"])
            .stderr(Stdio::null())
            .spawn()
            .context("starting nginx")?,
    );
    let started = Instant::now();
    while TcpStream::connect(&address).is_err() {
        if started.elapsed() > Duration::from_secs(10) {
            let log = std::fs::read_to_string(scratch.join("error.log")).unwrap_or_default();
            bail!("nginx did not start on {address}: {log}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((child, address))
}

/// One round: every client fetches every file; MB/s over all of them, from
/// the first client's start to the last one's end (each client times
/// itself: on a busy machine the thread that releases them may run late).
fn load(address: &str, files: &Arc<Files>) -> Result<f64> {
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (barrier, files, address) =
                (Arc::clone(&barrier), Arc::clone(files), address.to_string());
            std::thread::spawn(move || -> Result<(u64, Instant, Instant)> {
                barrier.wait();
                let started = Instant::now();
                let stream = TcpStream::connect(&address)
                    .with_context(|| format!("client {client}: connecting to {address}"))?;
                let mut reader = BufReader::with_capacity(256 * 1024, stream);
                let mut received = 0;
                for (name, bytes) in files.iter() {
                    received += fetch(&mut reader, &address, name, bytes)
                        .with_context(|| format!("client {client}: /{name} from {address}"))?;
                }
                Ok((received, started, Instant::now()))
            })
        })
        .collect();
    let mut total = 0;
    let mut first: Option<Instant> = None;
    let mut last: Option<Instant> = None;
    for client in clients {
        let (received, started, ended) = client
            .join()
            .map_err(|_| anyhow::anyhow!("a client panicked"))??;
        total += received;
        first = Some(first.map_or(started, |f| f.min(started)));
        last = Some(last.map_or(ended, |l| l.max(ended)));
    }
    let seconds = match (first, last) {
        (Some(first), Some(last)) => (last - first).as_secs_f64(),
        _ => bail!("no client ran"),
    };
    Ok(total as f64 / 1e6 / seconds)
}

/// GET /name on a keep-alive connection; the body compared byte for byte
/// with `expected`.
fn fetch(
    reader: &mut BufReader<TcpStream>,
    host: &str,
    name: &str,
    expected: &[u8],
) -> Result<u64> {
    write!(
        reader.get_mut(),
        "GET /{name} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: berth-bench\r\n\r\n"
    )?;
    let mut status = String::new();
    reader.read_line(&mut status)?;
    if !status.starts_with("HTTP/1.1 200 ") {
        bail!("answered {:?}", status.trim_end());
    }
    let mut length = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            bail!("connection closed in the response head");
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((header, value)) = line.split_once(':')
            && header.eq_ignore_ascii_case("content-length")
        {
            length = Some(value.trim().parse::<usize>()?);
        }
    }
    if length != Some(expected.len()) {
        bail!("Content-Length {length:?}, the file has {}", expected.len());
    }
    let mut offset = 0;
    let mut chunk = vec![0u8; 256 * 1024];
    while offset < expected.len() {
        let want = chunk.len().min(expected.len() - offset);
        let read = reader.read(&mut chunk[..want])?;
        if read == 0 {
            bail!("connection closed after {offset} bytes");
        }
        if chunk[..read] != expected[offset..offset + read] {
            bail!(
                "bytes differ from the file within {offset}..{}",
                offset + read
            );
        }
        offset += read;
    }
    Ok(offset as u64)
}
