//! Simulator
