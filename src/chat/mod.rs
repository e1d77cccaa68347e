//! Chat text, no GPU: the checkpoint's chat template rendered exactly as Hugging Face
//! transformers renders it (`template`, over the OpenAI request of `request`, the jinja2
//! environment of `jinja` and the Python formatting of `pyvalue`), and generated text parsed
//! into an OpenAI assistant message, streaming-safe (`parse`, over the Python call syntax of
//! `pycall`); stop strings (`stop`) and token ids turned into text (`detok`), both over
//! streams. Nothing here imports `gpu`, `kernels` or `runtime`.

mod detok;
mod jinja;
mod parse;
mod pycall;
mod pyvalue;
mod request;
mod stop;
mod strftime;
mod template;

pub use detok::Detokenizer;
pub use parse::{
    parse_output, AssistantMessage, OutputParser, ParseEvent, THINK_END, THINK_START,
    TOOL_CALL_END, TOOL_CALL_START,
};
pub use pycall::{parse_calls, ToolCall};
pub use pyvalue::{JsonStyle, PyValue};
pub use request::ChatRequest;
pub use stop::{StopMatcher, StopStep};
pub use template::ChatTemplate;
