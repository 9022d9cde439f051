//! ImageNet-style folders: `root/<class>/<image>`, class index = sorted folder names (for
//! ImageNet's 1000 synset folders that is the standard order), or an explicit class map.
//!
//! Scanning reports every problem by path; non-image files are skipped and counted.

use std::path::{Path, PathBuf};

/// File endings decoded as images (case-insensitive).
pub const IMAGE_EXTENSIONS: &[&str] = &[
    "jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff", "ppm", "pgm", "pnm",
];

#[derive(Debug, thiserror::Error)]
pub enum FolderError {
    #[error("{0}: data root does not exist")]
    MissingRoot(String),
    #[error("{path}: cannot read directory: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("{0}: no class folders (expected root/<class>/<image>)")]
    NoClasses(String),
    #[error("{0}: class folder holds no images")]
    EmptyClass(String),
    #[error("{path}: class map: {reason}")]
    ClassMap { path: String, reason: String },
    #[error("--shard {0}: expected K/N with 0 <= K < N")]
    BadShard(String),
}

/// One image and its label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub path: PathBuf,
    pub label: usize,
}

/// A scanned folder.
#[derive(Debug, Clone)]
pub struct ImageFolder {
    pub root: PathBuf,
    /// Class folder names, index = label.
    pub classes: Vec<String>,
    pub samples: Vec<Sample>,
    /// Files that are not images (by extension), skipped.
    pub skipped: Vec<PathBuf>,
}

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .map(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        .unwrap_or(false)
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>, FolderError> {
    let unreadable = |e: std::io::Error| FolderError::Unreadable {
        path: dir.display().to_string(),
        reason: e.to_string(),
    };
    let mut v = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(unreadable)? {
        v.push(entry.map_err(unreadable)?.path());
    }
    v.sort();
    Ok(v)
}

/// Reads a class map: one class folder name per line, in label order (text after a tab or
/// space is a readable name and ignored here).
pub fn read_class_map(path: &Path) -> Result<Vec<String>, FolderError> {
    let text = std::fs::read_to_string(path).map_err(|e| FolderError::ClassMap {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split(['\t', ' ']).next().unwrap_or(l).to_string())
        .collect())
}

impl ImageFolder {
    /// Scans `root`. With a class map, the folders must be exactly the map's classes.
    pub fn scan(root: &Path, class_map: Option<&Path>) -> Result<Self, FolderError> {
        if !root.is_dir() {
            return Err(FolderError::MissingRoot(root.display().to_string()));
        }
        let mut skipped = Vec::new();
        let mut dirs = Vec::new();
        for p in read_dir_sorted(root)? {
            if p.is_dir() {
                dirs.push(p);
            } else {
                skipped.push(p);
            }
        }
        if dirs.is_empty() {
            return Err(FolderError::NoClasses(root.display().to_string()));
        }
        let names: Vec<String> = dirs
            .iter()
            .map(|d| {
                d.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
            .collect();
        let classes = match class_map {
            // ImageNet synset folders index into the standard 1000-class order, so a subset
            // of the classes still gets the labels the model's head uses.
            None if names.iter().all(|n| imagenet_index(n).is_some()) && names.len() < 1000 => {
                crate::labels::imagenet()
                    .iter()
                    .map(|(s, _)| s.to_string())
                    .collect()
            }
            None => names.clone(),
            Some(map_path) => {
                let map = read_class_map(map_path)?;
                let missing: Vec<&String> = names.iter().filter(|n| !map.contains(n)).collect();
                let absent: Vec<&String> = map.iter().filter(|m| !names.contains(m)).collect();
                if !missing.is_empty() {
                    return Err(FolderError::ClassMap {
                        path: map_path.display().to_string(),
                        reason: format!("folders not in the map: {}", preview(&missing)),
                    });
                }
                if !absent.is_empty() {
                    // An evaluation subset may lack classes; that is fine, labels still follow the map.
                    eprintln!(
                        "note: {} classes of the map have no folder under {}",
                        absent.len(),
                        root.display()
                    );
                }
                map
            }
        };
        let mut samples = Vec::new();
        for (dir, name) in dirs.iter().zip(&names) {
            let label = classes.iter().position(|c| c == name).unwrap_or(usize::MAX);
            let mut n = 0;
            for p in read_dir_sorted(dir)? {
                if p.is_file() && is_image(&p) {
                    samples.push(Sample { path: p, label });
                    n += 1;
                } else {
                    skipped.push(p);
                }
            }
            if n == 0 {
                return Err(FolderError::EmptyClass(dir.display().to_string()));
            }
        }
        Ok(Self {
            root: root.to_path_buf(),
            classes,
            samples,
            skipped,
        })
    }

    /// Keeps a deterministic 1/N of the samples: every N-th, starting at K.
    pub fn shard(&mut self, spec: &str) -> Result<(), FolderError> {
        let (k, n) = parse_shard(spec)?;
        self.keep_shard(k, n);
        Ok(())
    }

    /// [`ImageFolder::shard`] for a `K/N` already checked (`k < n`).
    pub fn keep_shard(&mut self, k: usize, n: usize) {
        self.samples = std::mem::take(&mut self.samples)
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % n == k)
            .map(|(_, s)| s)
            .collect();
    }

    /// The file list as it stands: sample count and a hash of every relative path, label and
    /// file size, in order. Why: a resumed run must see the images it began with (an added or
    /// replaced file changes the epoch's permutation, so the resume would not be exact).
    pub fn fingerprint(&self) -> String {
        // FNV-1a, 64 bit: stable across builds and platforms (std's hasher is not).
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for &b in bytes {
                h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
            }
        };
        for s in &self.samples {
            let size = std::fs::metadata(&s.path).map_or(u64::MAX, |m| m.len());
            eat(self.relative(&s.path).as_bytes());
            eat(&[0]);
            eat(&(s.label as u64).to_le_bytes());
            eat(&size.to_le_bytes());
        }
        format!("{} files, {h:016x}", self.samples.len())
    }

    /// Path of a sample relative to the root, with `/` separators (the cache's `files`).
    pub fn relative(&self, p: &Path) -> String {
        let r = p.strip_prefix(&self.root).unwrap_or(p);
        r.components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/")
    }
}

fn imagenet_index(name: &str) -> Option<usize> {
    crate::labels::imagenet()
        .iter()
        .position(|(s, _)| *s == name)
}

/// Parses `K/N`.
pub fn parse_shard(spec: &str) -> Result<(usize, usize), FolderError> {
    let bad = || FolderError::BadShard(spec.to_string());
    let (k, n) = spec.split_once('/').ok_or_else(bad)?;
    let (k, n): (usize, usize) = (
        k.trim().parse().map_err(|_| bad())?,
        n.trim().parse().map_err(|_| bad())?,
    );
    if n == 0 || k >= n {
        return Err(bad());
    }
    Ok((k, n))
}

fn preview(v: &[&String]) -> String {
    let mut s: Vec<String> = v.iter().take(5).map(|x| x.to_string()).collect();
    if v.len() > 5 {
        s.push(format!("... ({} in all)", v.len()));
    }
    s.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[&str]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for f in files {
            let p = d.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"x").unwrap();
        }
        d
    }

    #[test]
    fn sorted_classes_and_skipped_files() {
        let d = tree(&["b/2.jpg", "b/1.JPEG", "a/x.png", "a/notes.txt", "README"]);
        let f = ImageFolder::scan(d.path(), None).unwrap();
        assert_eq!(f.classes, ["a", "b"]);
        let rel: Vec<(String, usize)> = f
            .samples
            .iter()
            .map(|s| (f.relative(&s.path), s.label))
            .collect();
        assert_eq!(
            rel,
            [
                ("a/x.png".into(), 0),
                ("b/1.JPEG".into(), 1),
                ("b/2.jpg".into(), 1)
            ]
        );
        assert_eq!(f.skipped.len(), 2);
    }

    #[test]
    fn errors_name_the_problem() {
        let d = tree(&["a/x.png", "b/notes.txt"]);
        let e = ImageFolder::scan(d.path(), None).unwrap_err();
        assert!(
            matches!(e, FolderError::EmptyClass(ref p) if p.ends_with("b")),
            "{e}"
        );
        let e = ImageFolder::scan(&d.path().join("nope"), None).unwrap_err();
        assert!(matches!(e, FolderError::MissingRoot(_)));
        let e = ImageFolder::scan(tree(&["loose.jpg"]).path(), None).unwrap_err();
        assert!(matches!(e, FolderError::NoClasses(_)));
    }

    #[test]
    fn class_map_orders_labels_and_must_cover_folders() {
        let d = tree(&["cat/1.png", "dog/1.png"]);
        let map = d.path().join("map.txt");
        std::fs::write(&map, "dog\tDog\ncat\tCat\nbird\n").unwrap();
        let f = ImageFolder::scan(d.path(), Some(&map)).unwrap();
        assert_eq!(f.classes, ["dog", "cat", "bird"]);
        assert_eq!(f.samples[0].label, 1); // cat
        std::fs::write(&map, "dog\n").unwrap();
        let e = ImageFolder::scan(d.path(), Some(&map)).unwrap_err();
        assert!(e.to_string().contains("folders not in the map: cat"), "{e}");
    }

    #[test]
    fn imagenet_subsets_keep_standard_indices() {
        // goldfish is class 1 and tench class 0 in the standard order, whatever else is there.
        let d = tree(&["n01443537/a.JPEG", "n01530575/b.JPEG"]);
        let f = ImageFolder::scan(d.path(), None).unwrap();
        assert_eq!(f.classes.len(), 1000);
        assert_eq!(f.samples[0].label, 1);
        assert_eq!(f.classes[f.samples[1].label], "n01530575");
    }

    #[test]
    fn shards_partition_the_samples() {
        let d = tree(&["a/1.png", "a/2.png", "a/3.png", "b/4.png", "b/5.png"]);
        let all = ImageFolder::scan(d.path(), None).unwrap().samples;
        let mut seen = Vec::new();
        for k in 0..3 {
            let mut f = ImageFolder::scan(d.path(), None).unwrap();
            f.shard(&format!("{k}/3")).unwrap();
            seen.extend(f.samples);
        }
        seen.sort_by(|a, b| a.path.cmp(&b.path));
        assert_eq!(seen, all);
        assert!(
            parse_shard("3/3").is_err() && parse_shard("x").is_err() && parse_shard("0/0").is_err()
        );
    }
}
