//! `palisade eval`: replays labelled data through the detectors, which never see the labels,
//! and scores their alerts against them.
//!
//! Two data sets: [`skab`](mod@skab) (the SKAB water-pump benchmark, point-wise scores through the
//! multivariate baseline) and [`city`](mod@city) (palisade's own simulated city with its labelled
//! attack, equipment and insider scenarios, through the shipped rules, scored by incident).
//! Both end with the same line, `overall F1 <f1> FAR <percent>% MAR <percent>%`, each
//! defined by its module.

pub mod city;
pub mod skab;

pub use self::city::{CityReport, city};
pub use self::skab::{Report, SKAB_TRAIN_ROWS, skab};

use std::path::PathBuf;

/// The evaluation could not run.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A data file is missing or unreadable.
    #[error("{}: {message}", path.display())]
    Data {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Writing the report failed.
    #[error("cannot write the report: {0}")]
    Output(#[from] std::io::Error),
    /// The evaluation's own rule did not load (a bug).
    #[error("the evaluation rule does not load: {0}")]
    Rule(String),
    /// The replay of the simulated city failed.
    #[error("the city's replay failed: {0}")]
    Pipeline(String),
}

/// Point-wise confusion counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Anomalous rows alerted on.
    pub tp: u64,
    /// Normal rows alerted on.
    pub fp: u64,
    /// Anomalous rows missed.
    pub fn_: u64,
    /// Normal rows left alone.
    pub tn: u64,
}

impl Counts {
    /// Harmonic mean of precision and recall.
    pub fn f1(&self) -> f64 {
        let p = self.tp as f64 / (self.tp + self.fp).max(1) as f64;
        let r = self.tp as f64 / (self.tp + self.fn_).max(1) as f64;
        if p + r == 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        }
    }

    /// False-alarm rate: share of normal rows alerted on.
    pub fn far(&self) -> f64 {
        self.fp as f64 / (self.fp + self.tn).max(1) as f64
    }

    /// Missed-alarm rate: share of anomalous rows not alerted on.
    pub fn mar(&self) -> f64 {
        self.fn_ as f64 / (self.fn_ + self.tp).max(1) as f64
    }

    pub(crate) fn add(&mut self, o: Counts) {
        self.tp += o.tp;
        self.fp += o.fp;
        self.fn_ += o.fn_;
        self.tn += o.tn;
    }
}
