//! palisade's integration tests: one binary (one link of DataFusion), one module per feature.

mod cli;
mod decode_props;
mod kafka_pipeline;
mod reload;
mod replay;
mod ruletest;
mod sigma_corpus;
mod state;
mod support;
mod tansu;
