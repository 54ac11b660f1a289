//! Models that predict a label *and* how much humans would disagree: the candle
//! network (one definition for training and serving), input preprocessing, the
//! on-disk bundle, device selection, and the loaded [`Predictor`].

pub mod bundle;
pub mod calibration;
pub mod cnn;
pub mod device;
pub mod net;
pub mod predictor;
pub mod preprocess;

pub use bundle::{Architecture, Head, InputSchema, Manifest};
pub use predictor::{Prediction, Predictor};
