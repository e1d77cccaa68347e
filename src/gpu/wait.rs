//! Waiting on the GPU: native threads block until the device is done; a browser tab cannot
//! block, so there the async forms are the only ones that read anything back.

use std::future::Future;

use crate::error::{Error, Result};

/// Runs `fut` to completion on this thread (native), or refuses with an error naming the
/// async form to call instead (wasm, where blocking would hang the tab).
pub fn block_on<T>(fut: impl Future<Output = Result<T>>, async_form: &str) -> Result<T> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = async_form;
        pollster::block_on(fut)
    }
    #[cfg(target_arch = "wasm32")]
    {
        drop(fut);
        Err(Error::Gpu(format!(
            "a browser tab cannot block on the GPU; call {async_form} instead"
        )))
    }
}

/// Runs `allocate` and returns what it made, or the out-of-memory error it raised. Native
/// devices report it here; in the browser an error scope can only be awaited, so there the
/// allocation is unchecked and a failure reaches the device's uncaptured-error handler.
pub fn out_of_memory_checked<T>(
    device: &wgpu::Device,
    allocate: impl FnOnce() -> T,
) -> std::result::Result<T, wgpu::Error> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        let scope = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let made = allocate();
        match pollster::block_on(scope.pop()) {
            None => Ok(made),
            Some(e) => Err(e),
        }
    }
    #[cfg(target_arch = "wasm32")]
    {
        let _ = device;
        Ok(allocate())
    }
}

/// Maps `buffer`'s first `bytes` for reading once the GPU is done with it, and returns a copy
/// of them. `done`: the submission that last writes it (native waits for just that one).
pub async fn read_mapped(
    device: &wgpu::Device,
    buffer: &wgpu::Buffer,
    bytes: u64,
    done: Option<wgpu::SubmissionIndex>,
) -> Result<Vec<u8>> {
    let (tx, rx) = futures_channel::oneshot::channel();
    buffer.map_async(wgpu::MapMode::Read, ..bytes, move |r| {
        let _ = tx.send(r);
    });
    // Native devices make progress only when polled; the browser's maps itself.
    device
        .poll(wgpu::PollType::Wait {
            submission_index: done,
            timeout: None,
        })
        .map_err(|e| Error::Gpu(format!("waiting for the GPU failed: {e}")))?;
    rx.await
        .map_err(|_| Error::Gpu("readback callback never ran".into()))?
        .map_err(|e| Error::Gpu(format!("readback failed: {e}")))?;
    let data = buffer
        .get_mapped_range(..bytes)
        .map_err(|e| Error::Gpu(format!("readback mapping failed: {e}")))?
        .to_vec();
    buffer.unmap();
    Ok(data)
}
