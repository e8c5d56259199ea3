//! palisade's integration tests: one binary (one link of DataFusion), one module per feature.

mod alerting;
mod cli;
mod decode_props;
mod eval;
mod kafka_pipeline;
mod observability;
mod reload;
mod replay;
mod ruletest;
mod sigma_corpus;
mod state;
mod support;
mod tansu;
mod windows;
