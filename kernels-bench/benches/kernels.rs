//! Criterion benches of the kernel families at LFM2-8B-A1B shapes (H 2048, 32 experts top-4,
//! expert width 1792, 32/8 heads of 64, vocab 65536). Throughput is the bytes each kernel must
//! read (weights + activations), so criterion's GiB/s compares directly with the copy bench.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kernels_bench::{device, random_weights, run_once};
use wmoe::gpu::{Binding, GpuContext, WeightFormat};
use wmoe::kernels::qk_norm_rope::{Heads, KvType};
use wmoe::kernels::{attention, copy, matmul, matvec};

const H: usize = 2048;
const FE: usize = 1792;
const EXPERTS: usize = 32;
const TOP_K: usize = 4;

fn bench(
    c: &mut Criterion,
    name: &str,
    bytes: u64,
    ctx: &GpuContext,
    record: &dyn Fn(&mut wmoe::gpu::Recorder),
) {
    run_once(ctx, record); // compile the pipelines
    let mut g = c.benchmark_group("kernels");
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function(name, |b| {
        b.iter_custom(|n| (0..n).map(|_| run_once(ctx, record)).sum())
    });
    g.finish();
}

fn kernels(c: &mut Criterion) {
    let ctx = device();
    eprintln!("device: {} ({:?})", ctx.info.name, ctx.info.backend);

    let copy_bytes = 64u64 << 20;
    let (src, dst) = (
        ctx.storage("src", copy_bytes),
        ctx.storage("dst", copy_bytes),
    );
    bench(c, "copy 64 MiB", 2 * copy_bytes, &ctx, &|rec| {
        copy::record(rec, &(&src).into(), &(&dst).into(), copy_bytes)
    });

    let x = ctx.storage("x", (4 * FE * TOP_K) as u64);
    let y = ctx.storage("y", (4 * 65536) as u64);
    for format in [WeightFormat::F32, WeightFormat::F16, WeightFormat::Bf16] {
        let w = random_weights(&ctx, format, H, H, 1);
        let v = matvec::Variant::for_device(&ctx, format, false, false);
        let bytes = w.gpu_bytes() + 8 * H as u64;
        bench(
            c,
            &format!("matvec {} 2048x2048", format.name()),
            bytes,
            &ctx,
            &|rec| {
                let args = matvec::Args {
                    w: &w,
                    n: H as u32,
                    x: (&x).into(),
                    x_stride: H as u32,
                    y: (&y).into(),
                    y_stride: H as u32,
                    batch: 1,
                    ids: None,
                };
                matvec::record(rec, v, &args)
            },
        );
    }

    let head = random_weights(&ctx, WeightFormat::Bf16, 65536, H, 1);
    let v = matvec::Variant::for_device(&ctx, WeightFormat::Bf16, false, false);
    bench(
        c,
        "lm head bf16 65536x2048",
        head.gpu_bytes(),
        &ctx,
        &|rec| {
            let args = matvec::Args {
                w: &head,
                n: 65536,
                x: (&x).into(),
                x_stride: H as u32,
                y: (&y).into(),
                y_stride: 65536,
                batch: 1,
                ids: None,
            };
            matvec::record(rec, v, &args)
        },
    );
    drop(head);

    let gate_up = random_weights(&ctx, WeightFormat::Bf16, EXPERTS * 2 * FE, H, 2 * FE);
    let ids = ctx.storage_with("ids", &[3u32, 17, 20, 31]);
    let out = ctx.storage("expert out", (4 * TOP_K * 2 * FE) as u64);
    let v = matvec::Variant::for_device(&ctx, WeightFormat::Bf16, true, false);
    let active = (TOP_K * 2 * FE * H * 2) as u64;
    bench(
        c,
        "expert matvec bf16 gate_up top-4 of 32",
        active,
        &ctx,
        &|rec| {
            let args = matvec::Args {
                w: &gate_up,
                n: (2 * FE) as u32,
                x: (&x).into(),
                x_stride: 0,
                y: (&out).into(),
                y_stride: (2 * FE) as u32,
                batch: TOP_K as u32,
                ids: Some((&ids).into()),
            };
            matvec::record(rec, v, &args)
        },
    );
    drop(gate_up);

    let m = 128usize;
    let w = random_weights(&ctx, WeightFormat::Bf16, H, H, 1);
    let xm = ctx.storage("xm", (4 * m * H) as u64);
    let ym = ctx.storage("ym", (4 * m * H) as u64);
    let mv = matmul::Variant {
        format: WeightFormat::Bf16,
        gather: false,
        accumulate: false,
    };
    bench(
        c,
        "matmul bf16 128x2048x2048",
        w.gpu_bytes() + (8 * m * H) as u64,
        &ctx,
        &|rec| {
            let args = matmul::Args {
                w: &w,
                n: H as u32,
                m: m as u32,
                x: (&xm).into(),
                x_stride: H as u32,
                y: (&ym).into(),
                y_stride: H as u32,
                gather: None,
            };
            matmul::record(rec, mv, &args)
        },
    );

    for ctx_len in [1024u32, 8192] {
        let heads = Heads {
            n_heads: 32,
            n_kv: 8,
            head_dim: 64,
            kv: KvType::F16,
        };
        let kv_bytes = (ctx_len * heads.kv_words() * 4) as u64;
        let (k, vv) = (ctx.storage("k", kv_bytes), ctx.storage("v", kv_bytes));
        let (q, o) = (ctx.storage("q", 4 * 2048), ctx.storage("o", 4 * 2048));
        bench(
            c,
            &format!("decode attention f16 KV ctx {ctx_len}"),
            2 * kv_bytes,
            &ctx,
            &|rec| {
                attention::record(
                    rec,
                    heads,
                    &Binding::whole(&q),
                    &(&k).into(),
                    &(&vv).into(),
                    &(&o).into(),
                    1,
                    ctx_len - 1,
                )
            },
        );
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = kernels
}
criterion_main!(benches);
