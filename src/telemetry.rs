//! Telemetry: `tracing` with JSON lines on stdout (the Functions host forwards stdout to Application
//! Insights) or human text, filtered by `PATROL_LOG`.
