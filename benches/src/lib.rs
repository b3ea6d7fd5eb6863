//! criterion benchmarks live in `benches/benches/`; this library is empty.
