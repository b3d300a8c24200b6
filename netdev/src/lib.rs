//! Devices for fourtuple.
