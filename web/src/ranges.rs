//! Model files read in byte ranges from the tab: a URL through `fetch` with `Range` headers,
//! or a File / Blob the page picked (`Blob.slice().arrayBuffer()`). Each read brings only the
//! bytes asked for into the wasm heap; the loader converts them, writes them to a GPU page
//! and drops them.

use js_sys::{Function, Promise, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{Blob, Response};
use wmoe::model::{RangeRead, ReadFuture};
use wmoe::{Error, Result};

#[wasm_bindgen]
extern "C" {
    /// The global `fetch` (a window's or a worker's).
    #[wasm_bindgen(js_name = fetch)]
    fn fetch_with_init(url: &str, init: &JsValue) -> Promise;
}

/// The error of a failed read of `what`.
fn read_error(what: &str, e: JsValue) -> Error {
    let msg = e
        .dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| format!("{e:?}"));
    Error::Input(format!("cannot read {what}: {msg}"))
}

/// A file served over HTTP by a server that answers `Range` requests.
pub struct UrlReader {
    url: String,
    len: u64,
}

impl UrlReader {
    /// Probes `url` with a one-byte range request for the file's length; an error when the
    /// server ignores ranges (it would send the whole file, which the tab must not hold).
    pub async fn open(url: &str) -> Result<Self> {
        let resp = fetch_range(url, 0, 1).await?;
        if resp.status() == 200 {
            // the whole file is coming: stop it
            if let Ok(body) = Reflect::get(&resp, &"body".into()) {
                if let Ok(cancel) = Reflect::get(&body, &"cancel".into()) {
                    if let Some(cancel) = cancel.dyn_ref::<Function>() {
                        let _ = cancel.call0(&body);
                    }
                }
            }
            return Err(Error::Input(format!(
                "{url}: the server ignored the Range request and sent the whole file (status 200); \
                 wmoe streams weights in byte ranges so the tab never holds the model: serve the \
                 file from a server that supports Range requests (tools/serve_web.py does), or pick \
                 the file from disk instead"
            )));
        }
        let range = resp
            .headers()
            .get("content-range")
            .map_err(|e| read_error(url, e))?
            .unwrap_or_default();
        let len = range
            .rsplit_once('/')
            .and_then(|(_, total)| total.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                Error::Input(format!(
                    "{url}: the answer to a Range request names no file length (Content-Range '{range}'); \
                     a server on another origin must list Content-Range in Access-Control-Expose-Headers"
                ))
            })?;
        Ok(UrlReader {
            url: url.to_string(),
            len,
        })
    }
}

/// `fetch(url)` of bytes `[offset, offset + len)`, checked to be answered (2xx).
async fn fetch_range(url: &str, offset: u64, len: usize) -> Result<Response> {
    let init = js_sys::Object::new();
    let headers = js_sys::Object::new();
    let range = format!("bytes={offset}-{}", offset + len.max(1) as u64 - 1);
    let set = |o: &js_sys::Object, k: &str, v: &JsValue| Reflect::set(o, &k.into(), v);
    set(&headers, "Range", &range.into()).map_err(|e| read_error(url, e))?;
    set(&init, "headers", &headers).map_err(|e| read_error(url, e))?;
    let resp: Response = JsFuture::from(fetch_with_init(url, &init))
        .await
        .map_err(|e| read_error(url, e))?
        .unchecked_into();
    if !resp.ok() {
        return Err(Error::Input(format!(
            "{url}: the server answered {} {}",
            resp.status(),
            resp.status_text()
        )));
    }
    Ok(resp)
}

/// The bytes of an ArrayBuffer promise, copied into the wasm heap.
async fn bytes_of(what: &str, buffer: std::result::Result<Promise, JsValue>) -> Result<Vec<u8>> {
    let buffer = JsFuture::from(buffer.map_err(|e| read_error(what, e))?)
        .await
        .map_err(|e| read_error(what, e))?;
    Ok(Uint8Array::new(&buffer).to_vec())
}

impl RangeRead for UrlReader {
    fn read(&self, offset: u64, len: usize) -> ReadFuture<'_> {
        Box::pin(async move {
            let resp = fetch_range(&self.url, offset, len).await?;
            if resp.status() != 206 {
                return Err(Error::Input(format!(
                    "{}: the server stopped answering Range requests (status {})",
                    self.url,
                    resp.status()
                )));
            }
            bytes_of(&self.url, resp.array_buffer()).await
        })
    }

    fn len(&self) -> u64 {
        self.len
    }
}

/// A File or Blob the page holds (picked or dropped by the user).
pub struct BlobReader {
    blob: Blob,
    name: String,
}

impl BlobReader {
    pub fn new(blob: Blob, name: String) -> Self {
        BlobReader { blob, name }
    }
}

impl RangeRead for BlobReader {
    fn read(&self, offset: u64, len: usize) -> ReadFuture<'_> {
        Box::pin(async move {
            let end = offset + len as u64;
            let part = self
                .blob
                .slice_with_f64_and_f64(offset as f64, end as f64)
                .map_err(|e| read_error(&self.name, e))?;
            bytes_of(&self.name, Ok(part.array_buffer())).await
        })
    }

    fn len(&self) -> u64 {
        self.blob.size() as u64
    }
}
