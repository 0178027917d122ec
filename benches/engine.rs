//! The engine's pieces, timed apart: tokenization, one ONNX batch, scoring, and the
//! whole embed path. Needs the model: `eval "$(scripts/setup.py --print-env)" &&
//! cargo bench --bench engine`.

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use zeroshot::cli::args::ModelArgs;
use zeroshot::engine::{LabelSet, Mode};

const TICKETS: [&str; 4] = [
    "I was charged twice for my subscription this month and I would like the extra payment refunded",
    "The app crashes every time I open the settings page on my phone after the latest update",
    "Could you please add an export to CSV option for the monthly reports in the dashboard?",
    "I cannot log in because the password reset email never arrives in my inbox",
];

fn texts(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("{} (ticket {i})", TICKETS[i % TICKETS.len()]))
        .collect()
}

fn engine_benches(c: &mut Criterion) {
    let engine = ModelArgs::from_env()
        .config()
        .load()
        .unwrap_or_else(|err| panic!("{err} (run scripts/setup.py and export its --print-env)"));
    let prefix = engine.encoder().manifest().text_prefix.clone();
    let batch = texts(32);
    let batch_refs: Vec<&str> = batch.iter().map(String::as_str).collect();
    let encodings = engine
        .encoder()
        .tokenize(&batch_refs, &prefix)
        .expect("tokenize");
    let encoded: Vec<_> = encodings.iter().collect();
    let tokens: usize = encodings.iter().map(|e| e.get_ids().len()).sum();

    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(32));
    group.bench_function("tokenize_32_tickets", |b| {
        b.iter(|| {
            engine
                .encoder()
                .tokenize(black_box(&batch_refs), &prefix)
                .expect("tokenize")
        })
    });
    group.bench_function("infer_batch_of_32", |b| {
        b.iter(|| {
            engine
                .encoder()
                .run_encoded(black_box(&encoded))
                .expect("infer")
        })
    });
    group.bench_function("embed_32_tickets", |b| {
        b.iter(|| engine.embed_texts(black_box(&batch_refs)).expect("embed"))
    });
    group.throughput(Throughput::Elements(tokens as u64));
    group.bench_function("embed_32_tickets_per_token", |b| {
        b.iter(|| engine.embed_texts(black_box(&batch_refs)).expect("embed"))
    });

    let embedding = engine
        .embed_texts(&batch_refs[..1])
        .expect("embed")
        .remove(0);
    for count in [2usize, 200] {
        let names: Vec<String> = (0..count).map(|i| format!("topic number {i}")).collect();
        let set = LabelSet::new(&names, &BTreeMap::new(), &BTreeMap::new(), None).expect("labels");
        let labels = engine.label_vectors(&set).expect("label vectors");
        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("score_{count}_labels"), |b| {
            b.iter(|| engine.score(black_box(&embedding), &labels, Mode::Single, 0.3))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = engine_benches
}
criterion_main!(benches);
