//! palisade's integration tests: one binary (one link of DataFusion), one module per feature.

mod cli;
mod decode_props;
mod kafka_pipeline;
mod replay;
mod ruletest;
mod support;
mod tansu;
