//! Weight tensors on the GPU: row-major `[rows, cols]` matrices split into pages, each page a
//! buffer no larger than the device's storage-binding limit, rows padded to whole u32 words.
//!
//! On CPU devices q4_0 and q4_K pages are stored in row tiles: a tile of 2^t rows interleaves
//! its rows' words eight at a time, so a matvec workgroup that walks 128 rows in step reads
//! one contiguous stream instead of 128 (CPU prefetchers follow a few dozen streams). The
//! shared loaders in shaders/formats/common.wgsl address both layouts (`W_TILE_LOG2`);
//! docs/PERF.md has the measurements, including the formats where tiles did not pay.

use super::wait::out_of_memory_checked;
use super::{Defines, GpuContext, WeightFormat};
use crate::error::{Error, Result};

/// Rows `[row0, row0 + rows)` of a tensor, in one buffer.
#[derive(Clone, Debug)]
pub struct WeightPage {
    pub buffer: wgpu::Buffer,
    pub row0: u32,
    pub rows: u32,
}

/// A paged weight matrix.
#[derive(Clone, Debug)]
pub struct WeightTensor {
    pub name: String,
    pub format: WeightFormat,
    pub rows: u32,
    pub cols: u32,
    pub row_words: u32,
    /// Rows per tile as a power of two (0: plain row-major pages).
    pub tile_log2: u32,
    pub pages: Vec<WeightPage>,
}

/// The largest tile the device's profile wants for `format`.
pub fn max_tile_rows(ctx: &GpuContext, format: WeightFormat) -> usize {
    if ctx.profile().tiles(format) {
        MAX_TILE_ROWS
    } else {
        1
    }
}

/// Rows per tile on CPU devices: the rows one decode matvec workgroup walks in step.
pub const MAX_TILE_ROWS: usize = 128;

/// The tile for a `[rows, cols]` tensor grouped by `group_rows` in pages of `page_rows`: the
/// largest power of two up to `max_rows` that divides the rows and the groups and fits a page,
/// so tiles never straddle a group or a page; 1 (row-major) where the format's word groups
/// would straddle a tile's chunks.
fn tile_rows(
    format: WeightFormat,
    (rows, cols): (usize, usize),
    group_rows: usize,
    page_rows: usize,
    max_rows: usize,
) -> usize {
    if !format.tileable(cols) {
        return 1;
    }
    let mut t = max_rows.max(1).next_power_of_two();
    while t > 1
        && (!rows.is_multiple_of(t)
            || t > page_rows
            || (group_rows > 1 && !group_rows.is_multiple_of(t)))
    {
        t /= 2;
    }
    t
}

/// Words of one row kept together in a tile (`TILE_CHUNK_LOG2` in formats/common.wgsl): one
/// q4_0 unit pair, the most a lane reads from a row in one step of the decode matvec.
pub const TILE_CHUNK_WORDS: usize = 8;

/// Rewrites row-major rows of `row_words` words into tiles of `tile` rows.
fn tile_page(src: &[u8], dst: &mut [u8], row_words: usize, tile: usize) {
    let cw = TILE_CHUNK_WORDS;
    let (row_bytes, chunks) = (row_words * 4, row_words / cw);
    for (s, d) in src
        .chunks_exact(tile * row_bytes)
        .zip(dst.chunks_exact_mut(tile * row_bytes))
    {
        for j in 0..tile {
            for c in 0..chunks {
                let from = j * row_bytes + c * cw * 4;
                let to = (c * tile + j) * cw * 4;
                d[to..to + cw * 4].copy_from_slice(&s[from..from + cw * 4]);
            }
        }
    }
}

impl WeightTensor {
    /// Uploads a `[rows, cols]` matrix page by page. Pages hold whole groups of `group_rows`
    /// rows (one expert's rows, say) so a kernel never needs two pages for one group.
    /// `fill(row0, n, out)` writes rows `row0..row0+n` into `out`, each row `row_words * 4`
    /// bytes (the padding bytes are zero already). Host memory stays bounded by one page.
    /// Pages are tiled as the device prefers (`max_tile_rows`).
    pub fn upload(
        ctx: &GpuContext,
        name: &str,
        format: WeightFormat,
        rows: usize,
        cols: usize,
        group_rows: usize,
        fill: impl FnMut(usize, usize, &mut [u8]) -> Result<()>,
    ) -> Result<Self> {
        let paging = Paging {
            group_rows,
            page_bytes: None,
            max_tile: max_tile_rows(ctx, format),
        };
        Self::upload_paged(ctx, (name, format), (rows, cols), paging, fill)
    }

    /// `upload` of a `[rows, cols]` tensor cut into pages as `paging` says.
    pub fn upload_paged(
        ctx: &GpuContext,
        (name, format): (&str, WeightFormat),
        (rows, cols): (usize, usize),
        paging: Paging,
        mut fill: impl FnMut(usize, usize, &mut [u8]) -> Result<()>,
    ) -> Result<Self> {
        let mut up = PagedUpload::new(ctx, (name, format), (rows, cols), paging)?;
        while let Some((row0, n)) = up.next_rows() {
            fill(row0, n, up.staging())?;
            up.commit()?;
        }
        Ok(up.finish())
    }

    /// The define that tells the shared weight loaders this tensor's page layout.
    pub fn layout_defines(&self) -> Defines {
        let d = Defines::new();
        if self.tile_log2 == 0 {
            d
        } else {
            d.uint("W_TILE_LOG2", self.tile_log2)
        }
    }

    /// Bytes the pages occupy on the GPU.
    pub fn gpu_bytes(&self) -> u64 {
        self.pages.iter().map(|p| p.buffer.size()).sum()
    }
}

/// How a tensor is cut into pages: whole groups of `group_rows` rows (an expert's rows; 1 for
/// a plain matrix) per page, pages of at most `page_bytes` (default and cap: the device's
/// binding limit; tests force small pages with it), tiles of at most `max_tile` rows (1:
/// row-major).
#[derive(Clone, Copy, Debug)]
pub struct Paging {
    pub group_rows: usize,
    pub page_bytes: Option<u64>,
    pub max_tile: usize,
}

/// Rows of a tensor uploaded chunk by chunk: [`PagedUpload::next_rows`] names the rows to
/// convert next, the caller writes them into [`PagedUpload::staging`] and
/// [`PagedUpload::commit`]s them into their page. A chunk is at most [`CHUNK_BYTES`] (and
/// whole tiles), so host memory stays bounded by one chunk whatever the page size, and a
/// loader may fetch a chunk's source bytes asynchronously between the calls.
pub struct PagedUpload<'c> {
    ctx: &'c GpuContext,
    t: WeightTensor,
    /// Rows per page (whole groups and tiles), rows per chunk (whole tiles).
    page_rows: usize,
    chunk_rows: usize,
    /// The next row to convert, and the rows of the chunk in `staging`.
    row0: usize,
    n: usize,
    staging: Vec<u8>,
    tiled: Vec<u8>,
}

/// The most bytes of converted rows held on the host at once while uploading.
pub const CHUNK_BYTES: usize = 8 << 20;

impl<'c> PagedUpload<'c> {
    /// Plans the pages of a `[rows, cols]` tensor in `format` as `paging` says.
    pub fn new(
        ctx: &'c GpuContext,
        (name, format): (&str, WeightFormat),
        (rows, cols): (usize, usize),
        paging: Paging,
    ) -> Result<Self> {
        let Paging {
            group_rows,
            page_bytes,
            max_tile,
        } = paging;
        let max_page = page_bytes
            .unwrap_or(ctx.max_binding())
            .min(ctx.max_binding());
        let row_words = format.row_words(cols);
        let row_bytes = row_words * 4;
        let page_rows = (max_page / row_bytes.max(1) as u64) as usize;
        let tile = tile_rows(format, (rows, cols), group_rows.max(1), page_rows, max_tile);
        // Pages hold whole groups and whole tiles (one divides the other).
        let group_rows = group_rows.max(1).max(tile);
        let group_bytes = (group_rows * row_bytes) as u64;
        if group_bytes > max_page {
            return Err(Error::MissingCapability {
                adapter: ctx.info.name.clone(),
                what: format!(
                    "a storage binding of {} KiB for one row group of tensor '{name}'",
                    group_bytes.div_ceil(1 << 10)
                ),
                hint: format!(
                    "the limit is {} KiB per binding; use a smaller weight format",
                    max_page >> 10
                ),
            });
        }
        let groups_per_page = (max_page / group_bytes).max(1) as usize;
        let page_rows = groups_per_page * group_rows;
        let chunk_rows = (CHUNK_BYTES / row_bytes.max(1) / tile * tile).max(tile);
        Ok(PagedUpload {
            ctx,
            t: WeightTensor {
                name: name.to_string(),
                format,
                rows: rows as u32,
                cols: cols as u32,
                row_words: row_words as u32,
                tile_log2: tile.trailing_zeros(),
                pages: Vec::new(),
            },
            page_rows,
            chunk_rows,
            row0: 0,
            n: 0,
            staging: Vec::new(),
            tiled: Vec::new(),
        })
    }

    /// The rows `(row0, n)` to convert next (a chunk within one page, its staging zeroed),
    /// or `None` when every row is uploaded.
    pub fn next_rows(&mut self) -> Option<(usize, usize)> {
        let rows = self.t.rows as usize;
        if self.row0 >= rows {
            return None;
        }
        let page_end = (self.row0 / self.page_rows + 1) * self.page_rows;
        self.n = self.chunk_rows.min(page_end.min(rows) - self.row0);
        self.staging.clear();
        self.staging
            .resize(self.n * self.t.row_words as usize * 4, 0u8);
        Some((self.row0, self.n))
    }

    /// The chunk's rows, `row_words * 4` bytes each (padding bytes zero).
    pub fn staging(&mut self) -> &mut [u8] {
        &mut self.staging
    }

    /// Writes the staged chunk into its page (made when the chunk starts one).
    pub fn commit(&mut self) -> Result<()> {
        let (ctx, row_bytes) = (self.ctx, self.t.row_words as usize * 4);
        let tile = 1usize << self.t.tile_log2;
        if tile > 1 {
            self.tiled.resize(self.staging.len(), 0u8);
            tile_page(&self.staging, &mut self.tiled, row_bytes / 4, tile);
            std::mem::swap(&mut self.staging, &mut self.tiled);
        }
        let in_page = self.row0 % self.page_rows;
        if in_page == 0 {
            let rows = self.page_rows.min(self.t.rows as usize - self.row0);
            self.t.pages.push(WeightPage {
                buffer: page_buffer(ctx, &self.t.name, (rows * row_bytes) as u64)?,
                row0: self.row0 as u32,
                rows: rows as u32,
            });
        }
        let page = &self.t.pages.last().expect("made above").buffer;
        ctx.queue
            .write_buffer(page, (in_page * row_bytes) as u64, &self.staging);
        // Flush the queue's staging copy and wait, so host memory stays at about one chunk.
        ctx.queue.submit([]);
        let _ = ctx.device.poll(wgpu::PollType::wait_indefinitely());
        self.row0 += self.n;
        Ok(())
    }

    /// The uploaded tensor.
    pub fn finish(self) -> WeightTensor {
        self.t
    }
}

/// An empty page buffer of `bytes`, or a clear error when the device is out of memory.
fn page_buffer(ctx: &GpuContext, name: &str, bytes: u64) -> Result<wgpu::Buffer> {
    out_of_memory_checked(&ctx.device, || {
        ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(name),
            size: bytes.max(4),
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    })
    .map_err(|e| {
        Error::Gpu(format!(
            "out of GPU memory allocating {} MiB for tensor '{name}' ({e}); use a smaller \
             weight format, a shorter context or a GPU with more memory",
            bytes >> 20
        ))
    })
}

/// Uploads rows given in the canonical (GGUF) byte layout of `format`.
pub fn upload_canonical(
    ctx: &GpuContext,
    format: WeightFormat,
    (rows, cols): (usize, usize),
    paging: Paging,
    canonical: &[u8],
) -> Result<WeightTensor> {
    let (src_row, dst_row) = (format.row_bytes(cols), format.row_words(cols) * 4);
    let fill = |row0: usize, n: usize, out: &mut [u8]| {
        for r in 0..n {
            let src = &canonical[(row0 + r) * src_row..(row0 + r + 1) * src_row];
            format.repack_row(src, cols, &mut out[r * dst_row..(r + 1) * dst_row]);
        }
        Ok(())
    };
    WeightTensor::upload_paged(ctx, ("matrix", format), (rows, cols), paging, fill)
}
