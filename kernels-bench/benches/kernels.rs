//! Criterion benches of the kernel families at LFM2-8B-A1B shapes (H 2048, 32 experts top-4,
//! expert width 1792, 32/8 heads of 64, vocab 65536). Throughput is the bytes each kernel must
//! read (weights + activations), so criterion's GiB/s compares directly with the copy bench;
//! products also report FLOP counts in their names' units where weights are reused.
//! `WMOE_BENCH_FILTER=substring` limits the run to matching names, `a|b` to names holding either
//! (criterion's own filter works too; keep `copy` in the filter for the "% of copy" column).

use std::cell::RefCell;
use std::sync::Mutex;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kernels_bench::{device, random_weights, run_once};
use wmoe::gpu::{
    AttentionKernel, AttentionTiles, Binding, GpuContext, Recorder, WeightFormat, GPU_FORMATS,
};
use wmoe::kernels::{
    attention, copy, matmul, matvec, moe_gather, moe_router, rmsnorm, sample, shortconv,
};
use wmoe::kernels::{Heads, KvPages, KvType};

const H: usize = 2048;
const FE: usize = 1792;
const EXPERTS: usize = 32;
const TOP_K: usize = 4;
const VOCAB: usize = 65536;

fn bench(
    c: &mut Criterion,
    name: &str,
    bytes: u64,
    ctx: &GpuContext,
    record: &dyn Fn(&mut Recorder),
) {
    bench_at(c, name, bytes, (ctx, 0), record)
}

/// `bench` of a step recorded at cache position `pos0`.
fn bench_at(
    c: &mut Criterion,
    name: &str,
    bytes: u64,
    (ctx, pos0): (&GpuContext, u32),
    record: &dyn Fn(&mut Recorder),
) {
    if std::env::var("WMOE_BENCH_FILTER").is_ok_and(|f| !f.split('|').any(|f| name.contains(f))) {
        return;
    }
    run_once(ctx, pos0, record); // compile the pipelines
    let samples = RefCell::new(Vec::new());
    let mut g = c.benchmark_group("kernels");
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function(name, |b| {
        b.iter_custom(|n| {
            (0..n)
                .map(|_| {
                    let t = run_once(ctx, pos0, record);
                    samples.borrow_mut().push(t);
                    t
                })
                .sum()
        })
    });
    g.finish();
    let mut v = samples.into_inner();
    v.sort();
    let median = v[v.len() / 2].as_secs_f64();
    RESULTS
        .lock()
        .unwrap()
        .push((name.to_string(), bytes, median));
}

/// (bench, bytes read, median seconds) of every bench run, for the closing summary.
static RESULTS: Mutex<Vec<(String, u64, f64)>> = Mutex::new(Vec::new());

/// FLOPs of a product named with its shape: `AxB` (matvec) or `AxBxC` (batched), 2 per MAC.
fn flops(name: &str) -> Option<f64> {
    name.split(' ').find_map(|w| {
        let dims: Vec<f64> = w
            .split('x')
            .map(|d| d.parse().ok())
            .collect::<Option<_>>()?;
        (dims.len() >= 2).then(|| 2.0 * dims.iter().product::<f64>())
    })
}

/// Prints every bench's median with GiB/s, GFLOP/s where its name gives a shape, and the
/// percentage of the copy kernel's bandwidth measured in the same run.
fn summary() {
    let results = RESULTS.lock().unwrap();
    let gib = |bytes: u64, secs: f64| bytes as f64 / secs / (1u64 << 30) as f64;
    let copy = results
        .iter()
        .find(|r| r.0.starts_with("copy"))
        .map(|r| gib(r.1, r.2));
    println!("\n| bench | median | GiB/s | GFLOP/s | % of copy |\n|---|---:|---:|---:|---:|");
    for (name, bytes, secs) in results.iter() {
        let bw = gib(*bytes, *secs);
        let fl = flops(name).map_or("–".into(), |f| format!("{:.1}", f / secs / 1e9));
        let pct = copy.map_or("–".into(), |c| format!("{:.0}", 100.0 * bw / c));
        println!("| {name} | {:.3} ms | {bw:.2} | {fl} | {pct} |", secs * 1e3);
    }
}

fn products(c: &mut Criterion, ctx: &GpuContext) {
    let x = ctx.storage("x", (4 * 512 * 7168) as u64);
    let y = ctx.storage("y", (4 * 512 * 7168) as u64);
    for format in GPU_FORMATS {
        let w = random_weights(ctx, format, H, H, 1);
        let v = matvec::Variant::for_profile(ctx.profile(), format, matvec::Mode::Plain, false, 1);
        bench(
            c,
            &format!("matvec {} 2048x2048", format.name()),
            w.gpu_bytes() + 8 * H as u64,
            ctx,
            &|rec| {
                matvec::record(
                    rec,
                    v,
                    &matvec::Args::plain(&w, (&x).into(), (&y).into(), 1),
                )
            },
        );
        // With the RMSNorm folded in, where the device's matvec takes it (GPUs).
        if let Some(vn) = v.with_norm().filter(|_| format == WeightFormat::Q4_0) {
            let norm = ctx.storage_with("norm weights", &vec![1f32; H]);
            bench(
                c,
                &format!("matvec {} 2048x2048 with folded rmsnorm", format.name()),
                w.gpu_bytes() + 12 * H as u64,
                ctx,
                &|rec| {
                    let a = matvec::Args {
                        norm: Some(((&norm).into(), 1e-5)),
                        ..matvec::Args::plain(&w, (&x).into(), (&y).into(), 1)
                    };
                    matvec::record(rec, vn, &a)
                },
            );
        }
    }
    for format in [WeightFormat::Q4_0, WeightFormat::Q4K, WeightFormat::Bf16] {
        let m = 64u32;
        let w = random_weights(ctx, format, H, H, 1);
        let v = matvec::Variant::for_profile(ctx.profile(), format, matvec::Mode::Plain, false, m);
        bench(
            c,
            &format!("prefill batched matvec {} 64x2048x2048", format.name()),
            w.gpu_bytes(),
            ctx,
            &|rec| {
                let a = matvec::Args {
                    w: &w,
                    n: H as u32,
                    x: (&x).into(),
                    x_stride: H as u32,
                    y: (&y).into(),
                    y_stride: H as u32,
                    batch: m,
                    ids: None,
                    x_div: 1,
                    tokens: 1,
                    route: None,
                    norm: None,
                    gather: None,
                };
                matvec::record(rec, v, &a)
            },
        );
        let mv = matmul::Variant {
            format,
            gather: false,
            accumulate: false,
        };
        bench(
            c,
            &format!("prefill tiled matmul {} 64x2048x2048", format.name()),
            w.gpu_bytes(),
            ctx,
            &|rec| {
                let a = matmul::Args {
                    w: &w,
                    n: H as u32,
                    m,
                    x: (&x).into(),
                    x_stride: H as u32,
                    y: (&y).into(),
                    y_stride: H as u32,
                    gather: None,
                };
                matmul::record(rec, mv, &a)
            },
        );
    }
}

fn experts(c: &mut Criterion, ctx: &GpuContext) {
    let x = ctx.storage("x", (4 * 64 * TOP_K * 2 * FE) as u64);
    let out = ctx.storage("expert out", (4 * 64 * TOP_K * 2 * FE) as u64);
    let ids = ctx.storage_with("ids", &[3u32, 17, 20, 31]);
    for format in [WeightFormat::Q4_0, WeightFormat::Q4K, WeightFormat::Bf16] {
        let gate_up = random_weights(ctx, format, EXPERTS * 2 * FE, H, 2 * FE);
        let active = (TOP_K * 2 * FE * format.row_words(H) * 4) as u64;
        let v =
            matvec::Variant::for_profile(ctx.profile(), format, matvec::Mode::Experts, false, 1);
        bench(
            c,
            &format!("expert matvec {} gate_up top-4 of 32", format.name()),
            active,
            ctx,
            &|rec| {
                let a = matvec::Args {
                    w: &gate_up,
                    n: (2 * FE) as u32,
                    x: (&x).into(),
                    x_stride: 0,
                    y: (&out).into(),
                    y_stride: (2 * FE) as u32,
                    batch: TOP_K as u32,
                    ids: Some((&ids).into()),
                    x_div: 1,
                    tokens: 1,
                    route: None,
                    norm: None,
                    gather: None,
                };
                matvec::record(rec, v, &a)
            },
        );
        // The decode down projection with the weighted top-k sum and residual add fused.
        let down = random_weights(ctx, format, EXPERTS * H, FE, H);
        let weights = ctx.storage_with("route weights", &[0.4f32, 0.3, 0.2, 0.1]);
        let v = matvec::Variant::for_profile(
            ctx.profile(),
            format,
            matvec::Mode::ExpertsCombine,
            true,
            1,
        );
        bench(
            c,
            &format!("expert down combine {} top-4 of 32", format.name()),
            (TOP_K * H * format.row_words(FE) * 4) as u64,
            ctx,
            &|rec| {
                let a = matvec::Args {
                    w: &down,
                    n: H as u32,
                    x: (&x).into(),
                    x_stride: FE as u32,
                    y: (&out).into(),
                    y_stride: H as u32,
                    batch: TOP_K as u32,
                    ids: Some((&ids).into()),
                    x_div: 1,
                    tokens: 1,
                    route: Some((&weights).into()),
                    norm: None,
                    gather: None,
                };
                matvec::record(rec, v, &a)
            },
        );
        // Grouped expert product of a 64-token chunk (gather included).
        let t = 64usize;
        let route: Vec<u32> = (0..t * TOP_K)
            .map(|i| ((i * 7 + i / TOP_K) % EXPERTS) as u32)
            .collect();
        let rb = ctx.storage_with("route", &route);
        let lists = moe_gather::Buffers::new(ctx, EXPERTS, t * TOP_K);
        let v = matvec::Variant::for_profile(
            ctx.profile(),
            format,
            matvec::Mode::Gather,
            false,
            t as u32,
        );
        bench(
            c,
            &format!("grouped expert gate_up {} 64 tokens", format.name()),
            gate_up.gpu_bytes(),
            ctx,
            &|rec| {
                moe_gather::record(
                    rec,
                    &(&rb).into(),
                    &lists,
                    (t * TOP_K) as u32,
                    EXPERTS as u32,
                );
                let a = matvec::Args {
                    w: &gate_up,
                    n: (2 * FE) as u32,
                    x: (&x).into(),
                    x_stride: H as u32,
                    y: (&out).into(),
                    y_stride: (2 * FE) as u32,
                    batch: 0,
                    ids: None,
                    x_div: 1,
                    tokens: 1,
                    route: None,
                    norm: None,
                    gather: Some(lists.gather(EXPERTS as u32, t as u32, TOP_K as u32)),
                };
                matvec::record(rec, v, &a)
            },
        );
    }
}

fn small_kernels(c: &mut Criterion, ctx: &GpuContext) {
    let copy_bytes = 64u64 << 20;
    let (src, dst) = (
        ctx.storage("src", copy_bytes),
        ctx.storage("dst", copy_bytes),
    );
    bench(c, "copy 64 MiB", 2 * copy_bytes, ctx, &|rec| {
        copy::record(rec, &(&src).into(), &(&dst).into(), copy_bytes)
    });

    // Decode attention with the profile's kernel and, for comparison, the tiled one.
    let kernels = [
        ("", ctx.profile().attention_kernel(1)),
        (
            " tiled 8x32",
            AttentionKernel::Tiled(AttentionTiles { rows: 8, keys: 32 }),
        ),
    ];
    for ctx_len in [1024u32, 4096, 8192, 32768] {
        for kv in [KvType::F16, KvType::F32] {
            let heads = Heads {
                n_heads: 32,
                n_kv: 8,
                head_dim: 64,
                kv,
            };
            // The cache in pages of 16K positions, as sessions hold it.
            let page = ctx_len.min(16384);
            let kv_bytes = (ctx_len * heads.kv_words() * 4) as u64;
            let page_bytes = (page * heads.kv_words() * 4) as u64;
            let pages = ctx_len.div_ceil(page) as usize;
            let b = |x: &wgpu::Buffer| Binding::whole(x);
            let k: Vec<Binding> = (0..pages)
                .map(|_| b(&ctx.storage("k", page_bytes)))
                .collect();
            let v: Vec<Binding> = (0..pages)
                .map(|_| b(&ctx.storage("v", page_bytes)))
                .collect();
            let cache = KvPages {
                k: &k,
                v: &v,
                page_positions: page,
            };
            let (q, o) = (ctx.storage("q", 4 * 2048), ctx.storage("o", 4 * 2048));
            let parts_len = attention::partials_len(heads, 1, (pages, page));
            let parts = ctx.storage("partials", 4 * parts_len as u64);
            // Split-KV, as decode steps run (a CPU rasterizer stops a shader's loops after
            // 65535 iterations in all, which one pass over a long context can reach).
            for (kname, kernel) in kernels {
                let (qb, ob, pb) = (b(&q), b(&o), b(&parts));
                let args = attention::Args {
                    q: &qb,
                    cache: &cache,
                    out: &ob,
                    partials: Some(&pb),
                    kernel,
                };
                bench_at(
                    c,
                    &format!(
                        "decode attention {} KV ctx {ctx_len} split-KV{kname}",
                        kv.name()
                    ),
                    2 * kv_bytes,
                    (ctx, ctx_len - 1),
                    &|rec| attention::record(rec, heads, &args, 1),
                );
            }
        }
    }
    // Prefill attention with the profile's kernel and (where that is another) the tiled one: a
    // 256-token chunk after 4096 cached positions, f32 KV.
    let heads = Heads {
        n_heads: 32,
        n_kv: 8,
        head_dim: 64,
        kv: KvType::F32,
    };
    let (chunk, depth) = (256u32, 4096u32);
    let n_pos = depth + chunk;
    let kv_bytes = (n_pos * heads.kv_words() * 4) as u64;
    let (kb, vb) = (ctx.storage("k", kv_bytes), ctx.storage("v", kv_bytes));
    let (k, v) = ([Binding::whole(&kb)], [Binding::whole(&vb)]);
    let cache = KvPages {
        k: &k,
        v: &v,
        page_positions: n_pos,
    };
    let (q, o) = (
        ctx.storage("q", 4 * 2048 * chunk as u64),
        ctx.storage("o", 4 * 2048 * chunk as u64),
    );
    let tiled = AttentionKernel::Tiled(AttentionTiles { rows: 64, keys: 32 });
    let mut kernels = vec![ctx.profile().attention_kernel(chunk), tiled];
    kernels.dedup();
    for kernel in kernels {
        let (qb, ob) = (Binding::whole(&q), Binding::whole(&o));
        let args = attention::Args {
            q: &qb,
            cache: &cache,
            out: &ob,
            partials: None,
            kernel,
        };
        bench_at(
            c,
            &format!("prefill attention f32 KV chunk {chunk} at depth {depth} {kernel:?}"),
            2 * kv_bytes,
            (ctx, depth),
            &|rec| attention::record(rec, heads, &args, chunk),
        );
    }
    let proj = ctx.storage("proj", (4 * 3 * H) as u64);
    let kernel = ctx.storage("kernel", (4 * 3 * H) as u64);
    let state = ctx.storage("state", (4 * 2 * H) as u64);
    let out = ctx.storage("out", (4 * H) as u64);
    bench(c, "shortconv decode", (4 * 8 * H) as u64, ctx, &|rec| {
        let b = |x: &wgpu::Buffer| Binding::whole(x);
        let args = shortconv::Args {
            proj: &b(&proj),
            kernel: &b(&kernel),
            state: &b(&state),
            y: &b(&out),
        };
        shortconv::record(rec, &args, H as u32, 1, 3)
    });
    let logits = ctx.storage("router logits", 4 * 32);
    let bias = ctx.storage("bias", 4 * 32);
    let (ids, wts) = (ctx.storage("ids", 16), ctx.storage("w", 16));
    let routing = moe_router::Routing {
        n_experts: 32,
        top_k: 4,
        use_bias: true,
        norm_topk: true,
        scale: 1.0,
    };
    bench(c, "moe router decode", 256, ctx, &|rec| {
        moe_router::record(
            rec,
            routing,
            moe_router::Logits::Given(&(&logits).into()),
            &(&bias).into(),
            &(&ids).into(),
            &(&wts).into(),
            1,
        )
    });
    let (xn, wn) = (
        ctx.storage("x", (4 * H) as u64),
        ctx.storage("w", (4 * H) as u64),
    );
    bench(c, "rmsnorm 2048", (12 * H) as u64, ctx, &|rec| {
        let b = |x: &wgpu::Buffer| Binding::whole(x);
        let args = rmsnorm::Args {
            x: &b(&xn),
            w: &b(&wn),
            out: &b(&out),
            n: H as u32,
            rows: 1,
            first_row: 0,
            eps: 1e-5,
        };
        rmsnorm::record(rec, &args)
    });
}

/// Rows of 65,536 logits: shaped like a language model's (64 plausible tokens in [8, 12), the
/// rest uniform in [−10, 0)), and flat (all uniform in [−10, 10), where top-p keeps thousands
/// of tokens).
fn sampler_rows() -> [Vec<f32>; 2] {
    let mut state = 0x9E37_79B9u32;
    let mut uniform = || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        (state >> 8) as f32 / (1u32 << 24) as f32
    };
    let mut lm: Vec<f32> = (0..VOCAB).map(|_| uniform() * 10.0 - 10.0).collect();
    for _ in 0..64 {
        let t = (uniform() * VOCAB as f32) as usize;
        lm[t] = 8.0 + 4.0 * uniform();
    }
    let flat = (0..VOCAB).map(|_| uniform() * 20.0 - 10.0).collect();
    [lm, flat]
}

/// The sampler over one row of 65,536 logits: greedy, each filter alone, and the whole chain
/// with penalties over 64 earlier tokens.
fn sampler(c: &mut Criterion, ctx: &GpuContext) {
    let mut seen = vec![0u32; sample::seen_words(VOCAB)];
    for p in 0..64u32 {
        let t = (p as usize * 2654435761) % VOCAB;
        seen[t] += 1;
        seen[VOCAB + t] = 1000 - 64 + p + 1;
    }
    let [lm, flat] = sampler_rows().map(|r| ctx.storage_with("logits", &r));
    let seen = ctx.storage_with("seen", &seen);
    let out = ctx.storage("token", 4);
    let t1 = wmoe::SamplingParams {
        temperature: 1.0,
        ..Default::default()
    };
    let full = wmoe::SamplingParams {
        temperature: 0.8,
        top_k: 40,
        top_p: 0.95,
        min_p: 0.05,
        repeat_penalty: 1.1,
        presence_penalty: 0.5,
        frequency_penalty: 0.5,
        ..t1
    };
    let top_p = wmoe::SamplingParams { top_p: 0.95, ..t1 };
    for (name, sp, row) in [
        ("greedy", wmoe::SamplingParams::greedy(), &lm),
        ("temperature", t1, &lm),
        (
            "min-p 0.05",
            wmoe::SamplingParams { min_p: 0.05, ..t1 },
            &lm,
        ),
        ("top-k 40", wmoe::SamplingParams { top_k: 40, ..t1 }, &lm),
        ("top-p 0.95", top_p, &lm),
        ("top-p 0.95 flat row", top_p, &flat),
        ("top-k top-p min-p penalties", full, &lm),
    ] {
        let settings = ctx.storage_with("settings", &[sample::Settings::new(&sp)]);
        let bias = ctx.storage_with("bias", &sample::bias_list(&[]));
        let b = |x: &wgpu::Buffer| Binding::whole(x);
        let (lb, sb, seen_b, ob, bb) = (b(row), b(&settings), b(&seen), b(&out), b(&bias));
        let args = sample::Args {
            logits: &lb,
            settings: &sb,
            seen: &seen_b,
            out: &ob,
            bias: &bb,
        };
        bench_at(
            c,
            &format!("sample {name} vocab 65536"),
            4 * VOCAB as u64,
            (ctx, 1000),
            &|rec| sample::record(rec, &args, VOCAB as u32, 0, 0),
        );
    }
}

fn kernels(c: &mut Criterion) {
    let ctx = device();
    eprintln!("device: {} ({:?})", ctx.info.name, ctx.info.backend);
    small_kernels(c, &ctx);
    sampler(c, &ctx);
    products(c, &ctx);
    experts(c, &ctx);
    summary();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(2));
    targets = kernels
}
criterion_main!(benches);
