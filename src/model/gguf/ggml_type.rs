//! ggml tensor types: the table of every type GGUF files carry (name, block size) and the
//! ones wmoe reads, with their [`WeightFormat`].

use crate::gpu::WeightFormat;

/// A ggml tensor type id, as stored in a tensor info.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GgmlType(pub u32);

/// (id, name, elements per block, bytes per block) of the ggml types GGUF files carry
/// (gguf-py's `GGMLQuantizationType` and `GGML_QUANT_SIZES`).
const GGML_TYPES: &[(u32, &str, usize, usize)] = &[
    (0, "F32", 1, 4),
    (1, "F16", 1, 2),
    (2, "Q4_0", 32, 18),
    (3, "Q4_1", 32, 20),
    (6, "Q5_0", 32, 22),
    (7, "Q5_1", 32, 24),
    (8, "Q8_0", 32, 34),
    (9, "Q8_1", 32, 40),
    (10, "Q2_K", 256, 84),
    (11, "Q3_K", 256, 110),
    (12, "Q4_K", 256, 144),
    (13, "Q5_K", 256, 176),
    (14, "Q6_K", 256, 210),
    (15, "Q8_K", 256, 292),
    (16, "IQ2_XXS", 256, 66),
    (17, "IQ2_XS", 256, 74),
    (18, "IQ3_XXS", 256, 98),
    (19, "IQ1_S", 256, 50),
    (20, "IQ4_NL", 32, 18),
    (21, "IQ3_S", 256, 110),
    (22, "IQ2_S", 256, 82),
    (23, "IQ4_XS", 256, 136),
    (24, "I8", 1, 1),
    (25, "I16", 1, 2),
    (26, "I32", 1, 4),
    (27, "I64", 1, 8),
    (28, "F64", 1, 8),
    (29, "IQ1_M", 256, 56),
    (30, "BF16", 1, 2),
    (34, "TQ1_0", 256, 54),
    (35, "TQ2_0", 256, 66),
    (39, "MXFP4", 32, 17),
    (40, "NVFP4", 64, 36),
    (41, "Q1_0", 128, 18),
];

/// The ggml types wmoe reads, in the order error messages list them.
const SUPPORTED: [(GgmlType, WeightFormat); 11] = [
    (GgmlType::F32, WeightFormat::F32),
    (GgmlType::F16, WeightFormat::F16),
    (GgmlType::BF16, WeightFormat::Bf16),
    (GgmlType::Q8_0, WeightFormat::Q8_0),
    (GgmlType::Q4_0, WeightFormat::Q4_0),
    (GgmlType::Q4_1, WeightFormat::Q4_1),
    (GgmlType::Q5_0, WeightFormat::Q5_0),
    (GgmlType::Q5_1, WeightFormat::Q5_1),
    (GgmlType::Q4_K, WeightFormat::Q4K),
    (GgmlType::Q5_K, WeightFormat::Q5K),
    (GgmlType::Q6_K, WeightFormat::Q6K),
];

impl GgmlType {
    pub const F32: GgmlType = GgmlType(0);
    pub const F16: GgmlType = GgmlType(1);
    pub const Q4_0: GgmlType = GgmlType(2);
    pub const Q4_1: GgmlType = GgmlType(3);
    pub const Q5_0: GgmlType = GgmlType(6);
    pub const Q5_1: GgmlType = GgmlType(7);
    pub const Q8_0: GgmlType = GgmlType(8);
    pub const Q2_K: GgmlType = GgmlType(10);
    pub const Q4_K: GgmlType = GgmlType(12);
    pub const Q5_K: GgmlType = GgmlType(13);
    pub const Q6_K: GgmlType = GgmlType(14);
    pub const IQ2_XXS: GgmlType = GgmlType(16);
    pub const BF16: GgmlType = GgmlType(30);

    fn info(self) -> Option<&'static (u32, &'static str, usize, usize)> {
        GGML_TYPES.iter().find(|t| t.0 == self.0)
    }

    /// ggml's name (`Q4_K`, `IQ2_XXS`), or `unknown type id N`.
    pub fn name(self) -> String {
        match self.info() {
            Some(t) => t.1.to_string(),
            None => format!("unknown type id {}", self.0),
        }
    }

    /// The type of a ggml name (case-insensitive).
    pub fn from_name(name: &str) -> Option<GgmlType> {
        GGML_TYPES
            .iter()
            .find(|t| t.1.eq_ignore_ascii_case(name))
            .map(|t| GgmlType(t.0))
    }

    /// (elements, bytes) per block, for every known type.
    pub fn block(self) -> Option<(usize, usize)> {
        self.info().map(|t| (t.2, t.3))
    }

    /// wmoe's format for this type (same canonical block layout), if it reads it.
    pub fn format(self) -> Option<WeightFormat> {
        SUPPORTED.iter().find(|s| s.0 == self).map(|s| s.1)
    }

    /// The ggml type whose blocks are `f`'s canonical layout.
    pub fn of_format(f: WeightFormat) -> GgmlType {
        SUPPORTED
            .iter()
            .find(|s| s.1 == f)
            .map(|s| s.0)
            .expect("every WeightFormat is a ggml type")
    }
}

/// "F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K".
pub fn supported_types() -> String {
    SUPPORTED
        .iter()
        .map(|s| s.0.name())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_weight_format_is_a_ggml_type_with_the_same_blocks() {
        for f in crate::gpu::ALL_FORMATS {
            let t = GgmlType::of_format(f);
            assert_eq!(t.format(), Some(f));
            assert_eq!(t.block(), Some((f.block_elems(), f.block_bytes())), "{f:?}");
        }
        assert_eq!(GgmlType::IQ2_XXS.name(), "IQ2_XXS");
        assert_eq!(GgmlType(99).name(), "unknown type id 99");
        assert_eq!(GgmlType::from_name("q5_1"), Some(GgmlType::Q5_1));
        assert_eq!(GgmlType::Q5_1.format(), Some(WeightFormat::Q5_1));
        assert_eq!(GgmlType::Q2_K.format(), None);
        assert_eq!(
            supported_types(),
            "F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K"
        );
    }
}
