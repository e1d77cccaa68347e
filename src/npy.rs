//! Writes float32 arrays in NumPy's `.npy` format (version 1.0, little endian, C order).

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};
use crate::output::Staging;

/// Writes `data` with `shape` to `path` through a fresh temporary next to it, renamed into
/// place when complete ([`crate::output`]), so a failure never leaves a half-written file.
/// An existing `.npy` file at `path` is replaced; anything else there is refused.
pub fn write_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    assert_eq!(
        shape.iter().product::<usize>(),
        data.len(),
        "npy shape does not match the data"
    );
    check_replaceable(path)?;
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_txt = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_txt}, }}");
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    let mut bytes = Vec::with_capacity(10 + header.len() + data.len() * 4);
    bytes.extend_from_slice(b"\x93NUMPY\x01\x00");
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(bytemuck::cast_slice(data));
    let staging = Staging::new(path)?;
    let tmp = staging.path().join("out.npy");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create_new(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()
    };
    write().map_err(|e| Error::file(path, format!("cannot write the output: {e}")))?;
    staging.commit_file("out.npy")
}

/// `path` is free, or a `.npy` file (a finished output of an earlier run) that may be
/// replaced.
fn check_replaceable(path: &Path) -> Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    let mut magic = [0u8; 6];
    let npy = meta.is_file()
        && std::fs::File::open(path)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
            .is_ok()
        && &magic == b"\x93NUMPY";
    if !npy {
        return Err(Error::file(
            path,
            "exists and is not a .npy file; remove it or choose another --out",
        ));
    }
    Ok(())
}

/// Reads a float32 `.npy` written by `write_f32` (used by tests): (shape, data).
pub fn read_f32(path: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    let bad = || Error::file(path, "not a float32 .npy file");
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad());
    }
    let hl = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(bytes.get(10..10 + hl).ok_or_else(bad)?).map_err(|_| bad())?;
    if !header.contains("'<f4'") {
        return Err(bad());
    }
    let s = header
        .split("'shape': (")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .ok_or_else(bad)?;
    let shape: Vec<usize> = s
        .split(',')
        .filter(|x| !x.trim().is_empty())
        .map(|x| x.trim().parse().map_err(|_| bad()))
        .collect::<Result<_>>()?;
    let data: Vec<f32> = bytemuck::pod_collect_to_vec(&bytes[10 + hl..]);
    if data.len() != shape.iter().product::<usize>() {
        return Err(bad());
    }
    Ok((shape, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replace_only_npy_files_and_leave_no_temporary() {
        let d = std::env::temp_dir().join(format!("wmoe-npy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let out = d.join("l.npy");
        write_f32(&out, &[2], &[1.0, 2.0]).unwrap();
        write_f32(&out, &[1, 3], &[3.0, 4.0, 5.0]).unwrap();
        assert_eq!(read_f32(&out).unwrap(), (vec![1, 3], vec![3.0, 4.0, 5.0]));
        let notes = d.join("notes.txt");
        std::fs::write(&notes, "mine").unwrap();
        let e = write_f32(&notes, &[1], &[0.0]).unwrap_err().to_string();
        assert!(
            e.ends_with(
                "notes.txt: exists and is not a .npy file; remove it or choose another --out"
            ),
            "{e}"
        );
        assert_eq!(std::fs::read_to_string(&notes).unwrap(), "mine");
        let e = write_f32(&d.join("no/l.npy"), &[1], &[0.0])
            .unwrap_err()
            .to_string();
        assert!(e.contains("create it first"), "{e}");
        let mut left: Vec<String> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["l.npy", "notes.txt"]);
        let _ = std::fs::remove_dir_all(d);
    }
}
