//! Kernel parameter structs: declared once with `params!`, which derives the uniform's byte
//! layout and records each field's name and offset so a test can hold every Rust struct
//! against its WGSL `struct Params` through naga.

/// A uniform parameter struct whose field layout can be checked against its shader.
pub trait UniformLayout: bytemuck::Pod {
    /// `(field name, type, byte offset)` in declaration order.
    const FIELDS: &'static [(&'static str, &'static str, usize)];
}

/// Declares a `#[repr(C)]` parameter struct (u32 / f32 fields) with its `UniformLayout`.
#[macro_export]
macro_rules! params {
    ($(#[$meta:meta])* $vis:vis struct $name:ident { $($field:ident : $ty:ty),* $(,)? }) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
        $vis struct $name {
            $($field: $ty),*
        }
        impl $crate::gpu::UniformLayout for $name {
            const FIELDS: &'static [(&'static str, &'static str, usize)] = &[$((
                stringify!($field),
                stringify!($ty),
                std::mem::offset_of!($name, $field),
            )),*];
        }
    };
}
