//! The round protocol as a sans-IO state machine.
