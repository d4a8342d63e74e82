//! What the binary's integration tests share: a `feast-rs serve*` child process on an
//! ephemeral port.

#![allow(dead_code)]

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// `feast-rs` (the binary under test) as a command to add arguments to.
pub fn feast_rs() -> Command {
    Command::new(env!("CARGO_BIN_EXE_feast-rs"))
}

/// A `feast-rs` server child process, killed on drop; its port is read from the
/// "... listening on HOST:PORT ..." line it prints first.
pub struct Server {
    pub child: Child,
    pub port: u16,
}

impl Server {
    /// `feast-rs -c REPO COMMAND --host 127.0.0.1 --port 0`, stderr shown.
    pub fn start(repo: &Path, command: &str) -> Self {
        let mut cmd = feast_rs();
        cmd.arg("-c").arg(repo).arg(command);
        Self::spawn(cmd)
    }

    /// Runs `cmd` (a `feast-rs serve*` command line, with any environment the caller set)
    /// on 127.0.0.1 and an ephemeral port.
    pub fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .args(["--host", "127.0.0.1", "--port", "0"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start a feast-rs server");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|addr| addr.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from {cmd:?}: {line:?}"));
        Server { child, port }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
