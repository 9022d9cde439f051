//! `--devices`: work split over several devices, each part a child process of this program
//! (`train` runs one member per device, `eval` one shard per device).
//!
//! Why processes and not threads: Burn's random generators are global to a process (flex's,
//! and CubeCL's for every GPU), so members trained side by side in one process would draw
//! each other's numbers and stop being reproducible; a child also keeps its own allocator and
//! autotune state, and one failing leaves the others running. On a CPU backend each entry is a
//! slot with an equal share of the threads (`RAYON_NUM_THREADS` for the child).

use std::ffi::OsString;
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result};

/// `--devices` must not name a device twice.
pub fn distinct(devices: &[usize]) -> Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    for &d in devices {
        anyhow::ensure!(seen.insert(d), "--devices lists {d} twice");
    }
    Ok(())
}

/// This command's arguments (after the subcommand's name too) without the options in `own`
/// (each with its value, as `--x v` or `--x=v`) and the flags in `flags`: what a child gets
/// before the options it sets itself.
pub fn args_without(own: &[&str], flags: &[&str]) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy();
        if own.contains(&text.as_ref()) {
            args.next();
        } else if !(flags.contains(&text.as_ref())
            || own.iter().any(|o| text.starts_with(&format!("{o}="))))
        {
            out.push(arg);
        }
    }
    out
}

/// A child's slot, for its command line and its tag.
#[derive(Debug, Clone, Copy)]
pub struct Slot {
    /// The `--devices` entry.
    pub device: usize,
    /// Threads it gets on a CPU backend.
    pub threads: usize,
    pub cpu: bool,
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.cpu {
            write!(f, "cpu slot {}, {} threads", self.device, self.threads)
        } else {
            write!(f, "device {}", self.device)
        }
    }
}

/// Runs one child per job, at most one per device at a time (a job waits for the next free
/// device), and returns their outputs in the jobs' order. `args` gives a job's command line
/// (this program's arguments); stdout is captured, stderr goes to the terminal.
pub fn run<J: Sync>(
    devices: &[usize],
    cpu: bool,
    jobs: &[J],
    args: impl Fn(&J, Slot) -> Vec<OsString> + Sync,
) -> Result<Vec<std::io::Result<Output>>> {
    let exe = std::env::current_exe().context("finding this program to run the parts")?;
    let threads = (rayon::current_num_threads() / devices.len().max(1)).max(1);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for &device in devices {
            let slot = Slot {
                device,
                threads,
                cpu,
            };
            let (next, results, args, exe) = (&next, &results, &args, &exe);
            scope.spawn(move || {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(job) = jobs.get(i) else { break };
                    let mut cmd = Command::new(exe);
                    cmd.args(args(job, slot))
                        .stdin(Stdio::null())
                        .stderr(Stdio::inherit());
                    if cpu {
                        cmd.env("RAYON_NUM_THREADS", threads.to_string());
                    }
                    let out = cmd.output();
                    results
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((i, out));
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    results.sort_by_key(|(i, _)| *i);
    Ok(results.into_iter().map(|(_, r)| r).collect())
}

/// A child's JSON report on stdout, or why there is none (it failed, or printed none).
pub fn report(out: std::io::Result<Output>, what: &str) -> Result<serde_json::Value> {
    let out = out.with_context(|| format!("{what} could not start"))?;
    anyhow::ensure!(out.status.success(), "{what} failed ({})", out.status);
    serde_json::from_slice(&out.stdout).with_context(|| format!("{what} printed no report"))
}
