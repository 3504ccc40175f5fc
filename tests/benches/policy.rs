//! Policy compile time for a whole tailnet (issue 9's targets: 1k nodes <= 20 ms, 10k
//! nodes <= 500 ms, with 200 rules, with and without `autogroup:self`).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use mesh_core::policy::{compile, Policy};
use mesh_tests::tailnet_fixture;

fn full_compile(c: &mut Criterion) {
    let mut group = c.benchmark_group("policy_compile");
    group.sample_size(10);
    for nodes in [1_000usize, 10_000] {
        for self_rules in [false, true] {
            let text = tailnet_fixture::policy(nodes, 200, self_rules);
            let policy = Policy::parse("bench", &text).unwrap_or_else(|e| panic!("{e}"));
            let inventory = tailnet_fixture::nodes(nodes);
            let name = if self_rules { "with_self" } else { "no_self" };
            group.bench_with_input(BenchmarkId::new(name, nodes), &inventory, |b, inventory| {
                b.iter(|| compile(&policy, inventory))
            });
        }
    }
    group.finish();
    let text = tailnet_fixture::policy(10_000, 200, true);
    c.bench_function("policy_parse/10000_nodes_200_rules", |b| b.iter(|| Policy::parse("bench", &text)));
}

criterion_group!(benches, full_compile);
criterion_main!(benches);
