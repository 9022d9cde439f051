//! The one atomic file writer every output goes through (caches, checkpoints, exports,
//! specs, plots, tensor outputs): a reader never sees a torn file.

use std::path::Path;

/// A failed atomic write: the file that could not be created, written or renamed.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct WriteError {
    pub path: String,
    pub source: std::io::Error,
}

/// Writes a file atomically: a temporary file of a unique name beside it, created
/// exclusively (never someone else's file, nor another writer's), written and synced, renamed
/// over the target, then the directory synced so the rename itself survives a power cut. A
/// crash at any point leaves either the old file or the new one, never a torn one; on an error
/// the temporary file is removed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    write_with_hook(path, bytes, &|| {})
}

/// [`write_atomic`], calling `half_way` once half the bytes are written and synced: the crash
/// test's hook (it aborts there), reachable from tests only.
fn write_with_hook(path: &Path, bytes: &[u8], half_way: &dyn Fn()) -> Result<(), WriteError> {
    use std::io::Write;
    let fail = |p: &Path, source| WriteError {
        path: p.display().to_string(),
        source,
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (tmp, mut f) = create_unique(dir, &name).map_err(|e| fail(path, e))?;
    let (first, rest) = bytes.split_at(bytes.len() / 2);
    let written = f
        .write_all(first)
        .and_then(|_| f.sync_all())
        .map(|_| half_way())
        .and_then(|_| f.write_all(rest))
        .and_then(|_| f.sync_all())
        .map_err(|e| fail(&tmp, e))
        .and_then(|_| {
            drop(f);
            std::fs::rename(&tmp, path).map_err(|e| fail(path, e))
        });
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return written;
    }
    sync_dir(dir).map_err(|e| fail(dir, e))
}

/// `.NAME.PID.N.tmp` in `dir`, created exclusively; the first free `N`.
fn create_unique(dir: &Path, name: &str) -> std::io::Result<(std::path::PathBuf, std::fs::File)> {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    loop {
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
        {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Makes a rename in `dir` durable (Unix: fsync of the directory; elsewhere nothing to do).
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replace_and_leave_no_temporary_files() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("out.bin");
        write_atomic(&p, b"first").unwrap();
        write_atomic(&p, b"second").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second");
        let names: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("out.bin")]);
        // A stale temporary file of the old fixed name is neither used nor touched.
        std::fs::write(d.path().join(".out.bin.tmp"), b"stale").unwrap();
        write_atomic(&p, b"third").unwrap();
        assert_eq!(
            std::fs::read(d.path().join(".out.bin.tmp")).unwrap(),
            b"stale"
        );
    }

    /// A process that dies half-way through overwriting a file (here it aborts from the
    /// test-only hook) leaves the old file whole and its torn bytes in a hidden temporary
    /// file. The test runs itself as the child process that dies.
    #[test]
    fn a_crash_half_way_leaves_the_old_file() {
        const CHILD: &str = "COMMITTEE_TEST_CRASH_CHILD";
        if let Some(p) = std::env::var_os(CHILD) {
            let _ = write_with_hook(Path::new(&p), b"new contents", &|| std::process::abort());
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("ckpt");
        write_atomic(&p, b"old contents").unwrap();
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "atomic::tests::a_crash_half_way_leaves_the_old_file",
            ])
            .env(CHILD, &p)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(!status.success(), "the child did not die");
        assert_eq!(std::fs::read(&p).unwrap(), b"old contents");
        let torn: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(".ckpt.")
            })
            .collect();
        assert_eq!(torn.len(), 1, "{torn:?}");
        assert_eq!(std::fs::read(&torn[0]).unwrap(), b"new co");
    }

    /// A failed write (the target is a directory, so the rename fails) removes its temporary
    /// file and names the path.
    #[test]
    fn a_failed_write_cleans_up() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("taken");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("x"), b"keep").unwrap();
        let e = write_atomic(&target, b"data").unwrap_err();
        assert!(e.path.ends_with("taken"), "{e}");
        let names: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("taken")]);
    }
}
