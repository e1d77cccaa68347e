// Embedding lookup: out[t, :] = W[tokens[t], :] as f32, for the tokens whose row is in this page.
struct Params {
    h: u32,
    tokens: u32,
    row_words: u32,
    page_row0: u32,
    page_rows: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<u32>;
@group(0) @binding(2) var<storage, read> tokens: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    let t = gid.y;
    if (c >= p.h || t >= p.tokens) {
        return;
    }
    let tok = tokens[t];
    if (tok < p.page_row0 || tok >= p.page_row0 + p.page_rows) {
        return;
    }
    out[t * p.h + c] = w_load(w_row(tok - p.page_row0, p.row_words), c, p.h);
}
