//! An in-process `wmoe serve` on an ephemeral port of 127.0.0.1, for tests/serve.rs and
//! tests/chat_page (included by path: not every test binary that uses tests/common serves).

use std::net::SocketAddr;

use wmoe::serve::{App, Engine, Limits, ModelText};
use wmoe::{ChatTemplate, ModelFiles};

/// The bundled model's tokenizer and chat template.
pub fn bundled_text() -> ModelText {
    ModelText::new(
        &ModelFiles::bundled().unwrap(),
        ChatTemplate::bundled().unwrap(),
    )
    .unwrap()
}

/// Serves `engine` on an ephemeral port; the server stops when the runtime is dropped.
pub fn serve(
    engine: Engine,
    text: ModelText,
    limits: Limits,
) -> (SocketAddr, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let app = App {
        text,
        engine,
        limits,
    };
    rt.spawn(wmoe::serve::serve(listener, app, std::future::pending()));
    (addr, rt)
}
