//! The child processes (server, simulator): started with their output in a log file, measured
//! through `/proc`, and killed when dropped, whatever happened.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

use anyhow::{anyhow, Context};

pub(crate) struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

/// Resident memory now and at its highest, from `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Memory {
    pub rss_mib: f64,
    pub peak_mib: f64,
}

impl Proc {
    /// Starts `command` with stdout and stderr appended to `log`.
    pub fn spawn(name: &'static str, mut command: Command, log: PathBuf) -> anyhow::Result<Proc> {
        let out = File::create(&log)
            .with_context(|| format!("cannot create the {name}'s log {}", log.display()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("cannot start the {name}"))?;
        Ok(Proc { name, child, log })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// An error naming the process and quoting the end of its log when it has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(self.died(status)),
            Err(e) => Err(anyhow::Error::new(e).context(format!("cannot watch the {}", self.name))),
        }
    }

    fn died(&self, status: ExitStatus) -> anyhow::Error {
        anyhow!(
            "the {} exited ({status}); the end of its output:\n{}",
            self.name,
            tail(&self.log, 4096)
        )
    }

    pub fn memory(&self) -> anyhow::Result<Memory> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .with_context(|| format!("cannot read the {}'s memory", self.name))?;
        let field = |name: &str| -> anyhow::Result<f64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
                .map(|kib| kib / 1024.0)
                .with_context(|| format!("no {name} in /proc/{}/status", self.pid()))
        };
        Ok(Memory {
            rss_mib: field("VmRSS:")?,
            peak_mib: field("VmHWM:")?,
        })
    }
}

impl Proc {
    /// Kills the process now and waits for it to exit.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last `bytes` of a log file (lossy UTF-8).
pub(crate) fn tail(path: &Path, bytes: u64) -> String {
    let read = || -> io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(bytes)))?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    read().unwrap_or_else(|e| format!("(cannot read {}: {e})", path.display()))
}

/// A port free right now on loopback (the child binds it a moment later).
pub(crate) fn free_port() -> anyhow::Result<u16> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .context("cannot find a free port on loopback")?
        .port();
    Ok(port)
}

/// A folder of our own under the system's temporary folder, removed when dropped.
/// The run's folder (the servers' and the simulator's logs, the SQLite file), removed at the
/// end unless `keep` was called.
pub(crate) struct TempDir(pub PathBuf, bool);

impl TempDir {
    /// Leaves the folder in place when dropped (a run with errors: its logs say why).
    pub fn keep(&mut self) -> &std::path::Path {
        self.1 = true;
        &self.0
    }

    pub fn new() -> anyhow::Result<TempDir> {
        let dir = std::env::temp_dir().join(format!(
            "odm-devops-bench-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create the folder {}", dir.display()))?;
        Ok(TempDir(dir, false))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.1 {
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
