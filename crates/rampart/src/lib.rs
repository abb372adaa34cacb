//! rampart
