//! Saved sessions: a sequence's KV cache, conv states and conv checkpoints with its token
//! history, in one versioned, checksummed file that names the model it belongs to.
//!
//! Layout (little-endian): `WMOESESS`, version u32, model fingerprint u64, KV type code u32
//! (`kv_code`), bytes per position and layer u64, attention layers u32, conv snapshot bytes u64,
//! positions u64, the positions that follow from the history (u64; all of them, u64::MAX,
//! unless a context shift discarded tokens; version 2), the history (u32 each), each
//! attention layer's K then V for every position, the conv states, the checkpoint count u32
//! and each checkpoint (position u64, turn end u8, snapshot), the note's length u64 and its
//! UTF-8 bytes (version 2; a chat's messages); then
//! the FNV-1a hash of everything before it (u64). Written to a temporary file
//! beside the target and renamed into place.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::checkpoints::ConvCheckpoints;
use super::state::{LayerState, SequenceState};
use super::Session;
use crate::error::{Error, Result};
use crate::gpu::Binding;
use crate::kernels::KvType;
use crate::model::fingerprint::Fnv;

const MAGIC: &[u8; 8] = b"WMOESESS";
const VERSION: u32 = 2;

/// A note longer than this is refused when read (a damaged length).
const MAX_NOTE: u64 = 1 << 30;

/// A writer that hashes what it writes.
struct Hashed<W> {
    inner: W,
    hash: Fnv,
}

impl<W: Write> Hashed<W> {
    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.hash.bytes(bytes);
        self.inner.write_all(bytes)
    }
}

/// A reader that hashes what it reads.
struct Checked<R> {
    inner: R,
    hash: Fnv,
    path: PathBuf,
}

impl<R: Read> Checked<R> {
    fn take(&mut self, n: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; n];
        self.inner.read_exact(&mut buf).map_err(|e| {
            Error::file(
                &self.path,
                format!("truncated or unreadable session file ({e})"),
            )
        })?;
        self.hash.bytes(&buf);
        Ok(buf)
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
}

/// The attention layers' K and V page lists.
fn kv_pages(seq: &SequenceState) -> Vec<(&[Binding], &[Binding])> {
    seq.layers
        .iter()
        .filter_map(|l| match l {
            LayerState::Attn { k, v } => Some((&k[..], &v[..])),
            LayerState::Conv { .. } => None,
        })
        .collect()
}

/// The KV type's code in a session file: the element bytes for f16 and f32 (as the first
/// files recorded them), 8 for q8_0.
fn kv_code(kv: KvType) -> u64 {
    match kv {
        KvType::F16 => 2,
        KvType::F32 => 4,
        KvType::Q8_0 => 8,
    }
}

/// The shape fields every session file starts with (after magic and version).
fn header(s: &Session) -> [u64; 5] {
    let seq = &s.seq;
    [
        s.model.fingerprint,
        kv_code(seq.kv),
        seq.position_bytes,
        kv_pages(seq).len() as u64,
        ConvCheckpoints::snapshot_bytes(seq),
    ]
}

/// A session file's note: length, then UTF-8 bytes.
fn read_note(r: &mut Checked<BufReader<File>>) -> Result<String> {
    let len = r.u64()?;
    if len > MAX_NOTE {
        return Err(Error::file(
            &r.path,
            format!("holds a note of {len} bytes: damaged"),
        ));
    }
    String::from_utf8(r.take(len as usize)?)
        .map_err(|_| Error::file(&r.path, "holds a note that is not UTF-8: damaged"))
}

impl Session<'_> {
    /// Saves the sequence (history, KV cache, conv states and checkpoints) to `path`,
    /// through a temporary file beside it that is renamed into place.
    pub fn save_session(&self, path: &Path) -> Result<()> {
        self.save_session_with_note(path, "")
    }

    /// [`Self::save_session`] with a note of the application's stored beside the sequence
    /// (a chat's messages), given back by [`Self::load_session_with_note`].
    pub fn save_session_with_note(&self, path: &Path, note: &str) -> Result<()> {
        let name = path
            .file_name()
            .ok_or_else(|| Error::file(path, "is not a file path"))?;
        let tmp = path.with_file_name(format!(
            ".{}.tmp-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        let written = self.write_session(&tmp, note);
        let done = written.and_then(|_| {
            std::fs::rename(&tmp, path)
                .map_err(|e| Error::file(path, format!("cannot write the session ({e})")))
        });
        if done.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        done
    }

    fn write_session(&self, path: &Path, note: &str) -> Result<()> {
        let io = |e: std::io::Error| Error::file(path, format!("cannot write the session ({e})"));
        let file = File::create(path).map_err(io)?;
        let mut w = Hashed {
            inner: BufWriter::new(file),
            hash: Fnv::default(),
        };
        let [fingerprint, kv, position_bytes, layers, conv] = header(self);
        w.put(MAGIC).map_err(io)?;
        w.put(&VERSION.to_le_bytes()).map_err(io)?;
        w.put(&fingerprint.to_le_bytes()).map_err(io)?;
        w.put(&(kv as u32).to_le_bytes()).map_err(io)?;
        w.put(&position_bytes.to_le_bytes()).map_err(io)?;
        w.put(&(layers as u32).to_le_bytes()).map_err(io)?;
        w.put(&conv.to_le_bytes()).map_err(io)?;
        w.put(&(self.pos as u64).to_le_bytes()).map_err(io)?;
        let exact = u64::try_from(self.exact_until).unwrap_or(u64::MAX);
        w.put(&exact.to_le_bytes()).map_err(io)?;
        w.put(bytemuck::cast_slice(&self.history)).map_err(io)?;
        let page = self.seq.page_positions;
        for (k, v) in kv_pages(&self.seq) {
            for pages in [k, v] {
                for (i, b) in pages.iter().enumerate() {
                    let n = self.pos.saturating_sub(i * page).min(page);
                    if n > 0 {
                        let bytes = self
                            .ctx
                            .read_bytes(&b.buffer, 0, n as u64 * position_bytes)?;
                        w.put(&bytes).map_err(io)?;
                    }
                }
            }
        }
        for layer in &self.seq.layers {
            if let LayerState::Conv { state } = layer {
                w.put(&self.ctx.read_bytes(state, 0, state.size())?)
                    .map_err(io)?;
            }
        }
        let snapshots: Vec<_> = self.checkpoints.iter().collect();
        w.put(&(snapshots.len() as u32).to_le_bytes()).map_err(io)?;
        for (pos, turn_end, buffer) in snapshots {
            w.put(&(pos as u64).to_le_bytes()).map_err(io)?;
            w.put(&[turn_end as u8]).map_err(io)?;
            w.put(&self.ctx.read_bytes(buffer, 0, conv)?).map_err(io)?;
        }
        w.put(&(note.len() as u64).to_le_bytes()).map_err(io)?;
        w.put(note.as_bytes()).map_err(io)?;
        let sum = w.hash.finish();
        w.inner.write_all(&sum.to_le_bytes()).map_err(io)?;
        w.inner.flush().map_err(io)?;
        w.inner.get_ref().sync_all().map_err(io)
    }

    /// Restores a session saved by `save_session` with the same model, KV type and a
    /// context that holds it; the session's own sequence is replaced. A file of another
    /// model, format version or KV type, or a damaged one, is refused with a clear error.
    pub fn load_session(&mut self, path: &Path) -> Result<()> {
        self.load_session_with_note(path).map(|_| ())
    }

    /// [`Self::load_session`], returning the note saved with it (empty for none, and for a
    /// file of format version 1, which has none).
    pub fn load_session_with_note(&mut self, path: &Path) -> Result<String> {
        let file = File::open(path).map_err(|e| Error::file(path, format!("cannot open ({e})")))?;
        let mut r = Checked {
            inner: BufReader::new(file),
            hash: Fnv::default(),
            path: path.to_path_buf(),
        };
        let bad = |msg: String| Error::file(path, msg);
        if r.take(8)? != MAGIC {
            return Err(bad("is not a wmoe session file".into()));
        }
        let version = r.u32()?;
        if version != VERSION && version != 1 {
            return Err(bad(format!(
                "is a session file of format version {version}; this wmoe reads versions 1 and {VERSION}"
            )));
        }
        let want = header(self);
        let got = [
            r.u64()?,
            r.u32()? as u64,
            r.u64()?,
            r.u32()? as u64,
            r.u64()?,
        ];
        if got[0] != want[0] {
            return Err(bad(
                "was saved with another model (or the same one loaded with another --quant); load that model to resume it".into(),
            ));
        }
        if got[1..] != want[1..] {
            let saved = [KvType::F16, KvType::F32, KvType::Q8_0]
                .into_iter()
                .find(|kv| kv_code(*kv) == got[1])
                .map_or("unknown type", KvType::name);
            return Err(bad(format!(
                "holds a KV cache of {saved} (this session's: {}); start the session with the --kv-type it was saved with",
                self.seq.kv.name()
            )));
        }
        let pos = r.u64()? as usize;
        if pos > self.options().max_context {
            return Err(bad(format!(
                "holds {pos} positions, over this session's context of {}; pass a larger --ctx",
                self.options().max_context
            )));
        }
        // Version 1 files predate context shifts: every position follows from the tokens.
        let exact = match version {
            1 => usize::MAX,
            _ => usize::try_from(r.u64()?).unwrap_or(usize::MAX),
        };
        let note = self.read_state(&mut r, pos).and_then(|()| match version {
            1 => Ok(String::new()),
            _ => read_note(&mut r),
        });
        let note = match note {
            Ok(note) => note,
            Err(e) => {
                self.reset();
                return Err(e);
            }
        };
        let sum = r.hash.finish();
        let mut stored = [0u8; 8];
        r.inner
            .read_exact(&mut stored)
            .map_err(|_| bad("is truncated (no checksum)".into()))?;
        if u64::from_le_bytes(stored) != sum {
            self.reset();
            return Err(bad("is damaged (checksum mismatch)".into()));
        }
        self.exact_until = exact;
        Ok(note)
    }

    /// Reads the history, KV pages, conv states and checkpoints of `pos` positions.
    fn read_state(&mut self, r: &mut Checked<BufReader<File>>, pos: usize) -> Result<()> {
        self.reset();
        let history: Vec<u32> = bytemuck::pod_collect_to_vec(&r.take(4 * pos)?);
        self.seq.reserve(self.ctx, pos)?;
        let (page, position_bytes) = (self.seq.page_positions, self.seq.position_bytes);
        for (k, v) in kv_pages(&self.seq) {
            for pages in [k, v] {
                for (i, b) in pages.iter().enumerate() {
                    let n = pos.saturating_sub(i * page).min(page);
                    if n > 0 {
                        let bytes = r.take(n * position_bytes as usize)?;
                        self.ctx.write(&b.buffer, 0, &bytes);
                    }
                }
            }
        }
        for layer in &self.seq.layers {
            if let LayerState::Conv { state } = layer {
                let bytes = r.take(state.size() as usize)?;
                self.ctx.write(state, 0, &bytes);
            }
        }
        let snapshot = ConvCheckpoints::snapshot_bytes(&self.seq) as usize;
        for _ in 0..r.u32()? {
            let at = r.u64()? as usize;
            let turn_end = r.take(1)?[0] != 0;
            let bytes = r.take(snapshot)?;
            if at <= pos {
                self.checkpoints.insert(self.ctx, at, turn_end, &bytes)?;
            }
        }
        self.history = history;
        self.pos = pos;
        Ok(())
    }
}
