//! The model compiled into the library, which commands use when no `--model` is given: a
//! checkpoint directory's runtime files, read from memory ([`crate::Model::load_bundled`]), so
//! an installed binary needs no file beside it. Which model it is is the one table below.

use std::path::PathBuf;

/// A Hugging Face checkpoint directory's files, embedded in the binary.
pub struct BundledModel {
    /// The name of the directory under `assets/models/` it was bundled from.
    pub name: &'static str,
    /// (file name, contents): a single `model.safetensors`, `config.json` and the tokenizer
    /// and generation files, as in the directory.
    pub files: &'static [(&'static str, &'static [u8])],
}

impl BundledModel {
    /// The contents of the file `name`, if it is bundled.
    pub fn file(&self, name: &str) -> Option<&'static [u8]> {
        self.files.iter().find(|f| f.0 == name).map(|f| f.1)
    }

    /// The contents of the file `name`, or an error naming it when it is not bundled.
    pub fn require(&self, name: &str) -> crate::Result<&'static [u8]> {
        self.file(name)
            .ok_or_else(|| crate::Error::file(self.dir().join(name), "not bundled in this binary"))
    }

    /// The path that stands for the bundled model in [`crate::Model::dir`] and in error
    /// messages: `<bundled>/NAME` (no such directory exists).
    pub fn dir(&self) -> PathBuf {
        PathBuf::from("<bundled>").join(self.name)
    }
}

/// A [`BundledModel`] of the files `$file` of `assets/models/$name/`.
macro_rules! bundle {
    ($name:literal: $($file:literal),+ $(,)?) => {
        BundledModel {
            name: $name,
            files: &[$((
                $file,
                include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/models/", $name, "/", $file)),
            )),+],
        }
    };
}

/// The bundled model: the small LFM2-MoE trained on documentation text by
/// `tools/train_demo.py` (docs/DEMO-MODEL.md), so that it writes English; its runtime files
/// only (the `reference*` files beside them are test data).
pub static BUNDLED_MODEL: BundledModel = bundle!("demo":
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
    "chat_template.jinja",
);
