//! Tidy outputs (`wmoe logits`, `quantize`, `synth`): each is written into a fresh, uniquely
//! named temporary directory next to its target, `.<name>.tmp-<pid>-<random>`, holding a
//! marker file, and renamed into place only when complete. A failed or panicking write
//! removes its temporary; one left by a killed run is recognised by the next write of the
//! same target — by its name pattern, its marker and its process being gone, never by
//! guessing — and removed. Parent directories are never created.

use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The marker file inside every temporary.
const MARKER: &str = ".wmoe-output";

/// A temporary directory next to `target`, removed when dropped unless committed.
pub struct Staging {
    dir: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl Staging {
    /// Prepares writing `target`: its parent must exist; temporaries that earlier, killed
    /// runs left for the same target are removed; a fresh temporary is created.
    pub fn new(target: &Path) -> Result<Self> {
        let (parent, name) = parent_and_name(target)?;
        remove_stale(&parent, &name);
        let io = |e: std::io::Error| {
            Error::file(
                &parent,
                format!("cannot create a temporary output here: {e}"),
            )
        };
        for _ in 0..8 {
            let dir = parent.join(format!(
                ".{name}.tmp-{}-{:016x}",
                std::process::id(),
                random()
            ));
            match std::fs::create_dir(&dir) {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io(e)),
                Ok(()) => {}
            }
            let staging = Staging {
                dir,
                target: target.to_path_buf(),
                committed: false,
            };
            let mut marker = std::fs::File::create_new(staging.dir.join(MARKER)).map_err(io)?;
            marker
                .write_all(marker_text(&name).as_bytes())
                .map_err(io)?;
            return Ok(staging);
        }
        Err(Error::file(
            &parent,
            "cannot find a free temporary name here",
        ))
    }

    /// The temporary directory to write into.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Renames the temporary directory to the target (an empty directory there is
    /// replaced), then removes the marker from it.
    pub fn commit_dir(mut self) -> Result<()> {
        let io = |e: std::io::Error| Error::file(&self.target, format!("cannot create: {e}"));
        if self.target.is_dir() {
            std::fs::remove_dir(&self.target).map_err(io)?;
        }
        std::fs::rename(&self.dir, &self.target).map_err(io)?;
        self.committed = true;
        std::fs::remove_file(self.target.join(MARKER)).map_err(io)
    }

    /// Renames the file `inner` of the temporary directory to the target (a file there is
    /// replaced), then removes the temporary.
    pub fn commit_file(mut self, inner: &str) -> Result<()> {
        let io =
            |e: std::io::Error| Error::file(&self.target, format!("cannot write the output: {e}"));
        std::fs::rename(self.dir.join(inner), &self.target).map_err(io)?;
        self.committed = true;
        std::fs::remove_dir_all(&self.dir).map_err(io)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The directory `target` goes into (which must exist) and its file name.
fn parent_and_name(target: &Path) -> Result<(PathBuf, String)> {
    let name = target.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
        Error::file(
            target,
            "names no output file or directory; pass a path that ends in a name",
        )
    })?;
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !parent.is_dir() {
        return Err(Error::file(
            &parent,
            "does not exist or is not a directory; create it first (wmoe creates no parent directories)",
        ));
    }
    Ok((parent, name.to_string()))
}

fn marker_text(name: &str) -> String {
    format!("wmoe temporary output for '{name}'\n")
}

/// Removes the temporaries of `name` in `parent` whose process is gone: directories (not
/// links) named `.<name>.tmp-<pid>-<16 hex digits>` holding our marker for `name`.
fn remove_stale(parent: &Path, name: &str) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    let prefix = format!(".{name}.tmp-");
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = file_name
            .to_str()
            .and_then(|f| f.strip_prefix(&prefix))
            .and_then(temporary_pid)
        else {
            continue;
        };
        let path = entry.path();
        let is_dir = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir());
        let marked =
            std::fs::read_to_string(path.join(MARKER)).is_ok_and(|t| t == marker_text(name));
        if is_dir && marked && pid != std::process::id() && !process_alive(pid) {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// The pid of a temporary's name after its prefix: `<pid>-<16 hex digits>`.
fn temporary_pid(rest: &str) -> Option<u32> {
    let (pid, random) = rest.split_once('-')?;
    let hex = random.len() == 16 && random.bytes().all(|b| b.is_ascii_hexdigit());
    let digits = !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit());
    (hex && digits).then(|| pid.parse().ok()).flatten()
}

/// Whether process `pid` still runs (Linux: /proc; other Unix: `kill -0`; elsewhere it is
/// taken to run, so its temporary is kept).
fn process_alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        Path::new("/proc").join(pid.to_string()).exists()
    } else if cfg!(unix) {
        std::process::Command::new("kill")
            .args(["-0", &pid.to_string()])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    } else {
        true
    }
}

/// 64 random bits (std's per-process random hash keys, mixed with the time).
fn random() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    h.write_u128(now.map_or(0, |d| d.as_nanos()));
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("wmoe-output-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn entries(d: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_panicking_write_leaves_nothing_and_a_commit_leaves_only_the_target() {
        let d = scratch("panic");
        let target = d.join("out");
        let r = std::panic::catch_unwind(|| {
            let s = Staging::new(&target).unwrap();
            std::fs::write(s.path().join("a"), "x").unwrap();
            panic!("mid-write");
        });
        assert!(r.is_err());
        assert!(entries(&d).is_empty(), "{:?}", entries(&d));
        let s = Staging::new(&target).unwrap();
        std::fs::write(s.path().join("a"), "x").unwrap();
        s.commit_dir().unwrap();
        assert_eq!(entries(&d), ["out"]);
        assert_eq!(entries(&target), ["a"]);
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn only_our_dead_temporaries_of_the_same_target_are_removed() {
        let d = scratch("stale");
        // pid 99999999 is above every system's pid range: "gone"
        let dead = d.join(".out.tmp-99999999-0123456789abcdef");
        std::fs::create_dir(&dead).unwrap();
        std::fs::write(dead.join(MARKER), marker_text("out")).unwrap();
        std::fs::write(dead.join("model.safetensors"), "partial").unwrap();
        // look-alikes that are someone else's: no marker, another target's marker, a
        // live process, a name off the pattern
        let keep = [
            ".out.tmp-99999999-fedcba9876543210",
            ".other.tmp-99999999-0123456789abcdef",
            ".out.tmp-1-0123456789abcdef",
            ".out.tmp-99999999-xyz",
            "out.partial",
        ];
        for k in keep {
            std::fs::create_dir(d.join(k)).unwrap();
        }
        std::fs::write(d.join(keep[1]).join(MARKER), marker_text("other")).unwrap();
        std::fs::write(d.join(keep[2]).join(MARKER), marker_text("out")).unwrap();
        std::fs::write(d.join(keep[3]).join(MARKER), marker_text("out")).unwrap();
        let s = Staging::new(&d.join("out")).unwrap();
        assert!(!dead.exists(), "the dead run's temporary is removed");
        for k in keep {
            assert!(d.join(k).exists(), "{k} must be kept");
        }
        drop(s);
        assert_eq!(entries(&d).len(), keep.len());
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn a_missing_parent_is_an_error_and_is_not_created() {
        let d = scratch("parent");
        let e = Staging::new(&d.join("no/such/out"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("no/such") && e.contains("create it first"),
            "{e}"
        );
        assert!(!d.join("no").exists());
        let _ = std::fs::remove_dir_all(d);
    }
}
