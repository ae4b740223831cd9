//! The control channel: a Unix socket at [`SOCKET`] that takes one request
//! line and answers with text, and `berthctl`, its client (the init binary
//! under that name, or `init ctl ...`).
//!
//! Requests: `list`, `start NAME`, `stop NAME`, `restart NAME`,
//! `log NAME [LINES]`, `poweroff`, `reboot`. An answer that starts with
//! `error: ` is a failure; the client then exits with status 1.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::services::Status;

pub const SOCKET: &str = "/run/berth/control.sock";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    List,
    Start(String),
    Stop(String),
    Restart(String),
    Log(String, usize),
    Poweroff,
    Reboot,
}

pub const USAGE: &str = "usage: berthctl list | start NAME | stop NAME | restart NAME | log NAME [LINES] | poweroff | reboot";

pub fn parse(line: &str) -> Result<Request, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    // Every name is an entry's, as the builder allows them: a name becomes
    // a file name under /var/log. (A number of lines passes too, harmlessly.)
    if let Some(bad) = words.iter().skip(1).find(|w| !contract::is_entry_name(w)) {
        return Err(format!(
            "{bad:?} is not a service name (letters, digits, '-', '_' and '.')"
        ));
    }
    let name = |words: &[&str]| -> Result<String, String> {
        match words {
            [_, name] => Ok(name.to_string()),
            _ => Err(format!(
                "{} takes one service name",
                words.first().unwrap_or(&"")
            )),
        }
    };
    match words.first().copied() {
        Some("list") if words.len() == 1 => Ok(Request::List),
        Some("start") => Ok(Request::Start(name(&words)?)),
        Some("stop") => Ok(Request::Stop(name(&words)?)),
        Some("restart") => Ok(Request::Restart(name(&words)?)),
        Some("log") => match words[..] {
            [_, name] => Ok(Request::Log(name.to_string(), 20)),
            [_, name, lines] => {
                let lines = lines
                    .parse()
                    .map_err(|_| format!("log: {lines:?} is not a number of lines"))?;
                Ok(Request::Log(name.to_string(), lines))
            }
            _ => Err("log takes a service name and a number of lines".into()),
        },
        Some("poweroff") if words.len() == 1 => Ok(Request::Poweroff),
        Some("reboot") if words.len() == 1 => Ok(Request::Reboot),
        _ => Err(format!("unknown request {line:?}; {USAGE}")),
    }
}

/// The answer to `list`: one row per service.
pub fn table(rows: &[Status]) -> String {
    let mut out = format!(
        "{:<20} {:<9} {:>7} {:>8}  {}\n",
        "NAME", "STATE", "PID", "RESTARTS", "LAST EXIT"
    );
    for row in rows {
        let pid = row.pid.map_or("-".to_string(), |p| p.to_string());
        let last = row.last_exit.map_or("-".to_string(), |e| e.to_string());
        out.push_str(&format!(
            "{:<20} {:<9} {:>7} {:>8}  {last}\n",
            row.name, row.state, pid, row.restarts
        ));
    }
    out
}

/// Runs the client: sends `args` as one request and prints the answer.
pub fn client(args: &[String]) -> i32 {
    if args.is_empty() || args.iter().any(|a| a == "-h" || a == "--help") {
        eprintln!("{USAGE}");
        return if args.is_empty() { 2 } else { 0 };
    }
    let request = args.join(" ");
    if let Err(e) = parse(&request) {
        eprintln!("berthctl: {e}");
        return 2;
    }
    let socket = std::env::var("BERTH_CONTROL").unwrap_or_else(|_| SOCKET.to_string());
    let answer = (|| -> std::io::Result<String> {
        let mut stream = UnixStream::connect(&socket)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        stream.write_all(format!("{request}\n").as_bytes())?;
        stream.shutdown(std::net::Shutdown::Write)?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer)
    })();
    match answer {
        Ok(answer) => {
            if let Some(e) = answer.strip_prefix("error: ") {
                eprint!("berthctl: {e}");
                1
            } else {
                print!("{answer}");
                0
            }
        }
        Err(e) => {
            eprintln!("berthctl: {socket}: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervise::Exit;

    #[test]
    fn requests_parse_and_bad_ones_say_why() {
        assert_eq!(parse("list\n"), Ok(Request::List));
        assert_eq!(parse("restart sshd"), Ok(Request::Restart("sshd".into())));
        assert_eq!(parse("log sshd"), Ok(Request::Log("sshd".into(), 20)));
        assert_eq!(parse("log sshd 5"), Ok(Request::Log("sshd".into(), 5)));
        assert_eq!(parse("poweroff"), Ok(Request::Poweroff));
        assert_eq!(parse("stop"), Err("stop takes one service name".into()));
        assert!(parse("log sshd many").unwrap_err().contains("\"many\""));
        assert!(
            parse("dance")
                .unwrap_err()
                .starts_with("unknown request \"dance\"")
        );
    }

    /// A name becomes `/var/log/NAME.log`: nothing that leaves the
    /// directory or names another file gets through.
    #[test]
    fn only_names_are_names() {
        for bad in [
            "../x",
            "..",
            ".",
            "/etc/passwd",
            "a/b",
            "x\0",
            "sshd.log/..",
            "*",
        ] {
            for request in [
                format!("log {bad}"),
                format!("log {bad} 5"),
                format!("stop {bad}"),
            ] {
                let err = parse(&request).unwrap_err();
                assert!(err.contains("is not a service name"), "{request}: {err}");
            }
        }
        assert_eq!(
            parse("log a.b-c_1 5"),
            Ok(Request::Log("a.b-c_1".into(), 5))
        );
        assert_eq!(parse("log 5"), Ok(Request::Log("5".into(), 20)));
    }

    #[test]
    fn the_table_shows_every_field() {
        let rows = [
            Status {
                name: "sshd".into(),
                state: "running".into(),
                pid: Some(312),
                restarts: 2,
                last_exit: Some(Exit::Code(1)),
            },
            Status {
                name: "once".into(),
                state: "stopped".into(),
                pid: None,
                restarts: 0,
                last_exit: None,
            },
        ];
        let table = table(&rows);
        let lines: Vec<_> = table.lines().collect();
        assert!(lines[0].starts_with("NAME"));
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            ["sshd", "running", "312", "2", "exit", "status", "1"]
        );
        assert_eq!(
            lines[2].split_whitespace().collect::<Vec<_>>(),
            ["once", "stopped", "-", "0", "-"]
        );
    }
}
