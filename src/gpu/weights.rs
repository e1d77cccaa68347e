//! Weight tensors on the GPU: row-major `[rows, cols]` matrices split into pages, each page a
//! buffer no larger than the device's storage-binding limit, rows padded to whole u32 words.

pub use super::formats::WeightFormat;
use super::GpuContext;
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
    pub pages: Vec<WeightPage>,
}

impl WeightTensor {
    /// Uploads a `[rows, cols]` matrix page by page. Pages hold whole groups of `group_rows`
    /// rows (one expert's rows, say) so a kernel never needs two pages for one group.
    /// `fill(row0, n, out)` writes rows `row0..row0+n` into `out`, each row `row_words * 4`
    /// bytes (the padding bytes are zero already). Host memory stays bounded by one page.
    pub fn upload(
        ctx: &GpuContext,
        name: &str,
        format: WeightFormat,
        rows: usize,
        cols: usize,
        group_rows: usize,
        fill: impl FnMut(usize, usize, &mut [u8]) -> Result<()>,
    ) -> Result<Self> {
        Self::upload_paged(ctx, name, format, rows, cols, group_rows, None, fill)
    }

    /// `upload` with pages of at most `page_bytes` (default: the device's binding limit).
    #[allow(clippy::too_many_arguments)]
    pub fn upload_paged(
        ctx: &GpuContext,
        name: &str,
        format: WeightFormat,
        rows: usize,
        cols: usize,
        group_rows: usize,
        page_bytes: Option<u64>,
        mut fill: impl FnMut(usize, usize, &mut [u8]) -> Result<()>,
    ) -> Result<Self> {
        let max_page = page_bytes
            .unwrap_or(ctx.max_binding())
            .min(ctx.max_binding());
        let row_words = format.row_words(cols);
        let row_bytes = row_words * 4;
        let group_rows = group_rows.max(1);
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
        let mut pages = Vec::new();
        let mut row0 = 0;
        let mut staging = Vec::new();
        while row0 < rows {
            let n = page_rows.min(rows - row0);
            staging.clear();
            staging.resize(n * row_bytes, 0u8);
            fill(row0, n, &mut staging)?;
            let scope = ctx.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
            let buffer = ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(name),
                size: staging.len().max(4) as u64,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            if let Some(e) = pollster::block_on(scope.pop()) {
                return Err(Error::Gpu(format!(
                    "out of GPU memory allocating {} MiB for tensor '{name}' ({e}); use a smaller \
                     weight format, a shorter context or a GPU with more memory",
                    staging.len() >> 20
                )));
            }
            ctx.queue.write_buffer(&buffer, 0, &staging);
            // Flush the queue's staging copy and wait, so host memory stays at about one page.
            ctx.queue.submit([]);
            let _ = ctx.device.poll(wgpu::PollType::wait_indefinitely());
            pages.push(WeightPage {
                buffer,
                row0: row0 as u32,
                rows: n as u32,
            });
            row0 += n;
        }
        Ok(WeightTensor {
            name: name.to_string(),
            format,
            rows: rows as u32,
            cols: cols as u32,
            row_words: row_words as u32,
            pages,
        })
    }

    /// Bytes the pages occupy on the GPU.
    pub fn gpu_bytes(&self) -> u64 {
        self.pages.iter().map(|p| p.buffer.size()).sum()
    }
}

/// Uploads an f32 matrix in `format` with pages of at most `page_bytes` (tests force small
/// pages with it); returns the tensor and the values as the GPU sees them.
pub fn upload_f32_matrix(
    ctx: &GpuContext,
    format: WeightFormat,
    rows: usize,
    cols: usize,
    group_rows: usize,
    vals: &[f32],
    page_bytes: Option<u64>,
) -> Result<(WeightTensor, Vec<f32>)> {
    let mut canonical = vec![0u8; rows * format.row_bytes(cols)];
    let mut seen = Vec::with_capacity(vals.len());
    for (r, dst) in canonical
        .chunks_exact_mut(format.row_bytes(cols))
        .enumerate()
    {
        format.quantize_row(&vals[r * cols..(r + 1) * cols], dst);
        seen.extend(format.dequant_row(dst, cols));
    }
    let t = upload_canonical(ctx, format, rows, cols, group_rows, &canonical, page_bytes)?;
    Ok((t, seen))
}

/// Uploads rows given in the canonical (GGUF) byte layout of `format`.
pub fn upload_canonical(
    ctx: &GpuContext,
    format: WeightFormat,
    rows: usize,
    cols: usize,
    group_rows: usize,
    canonical: &[u8],
    page_bytes: Option<u64>,
) -> Result<WeightTensor> {
    let (src_row, dst_row) = (format.row_bytes(cols), format.row_words(cols) * 4);
    let fill = |row0: usize, n: usize, out: &mut [u8]| {
        for r in 0..n {
            let src = &canonical[(row0 + r) * src_row..(row0 + r + 1) * src_row];
            format.repack_row(src, cols, &mut out[r * dst_row..(r + 1) * dst_row]);
        }
        Ok(())
    };
    WeightTensor::upload_paged(
        ctx, "matrix", format, rows, cols, group_rows, page_bytes, fill,
    )
}
