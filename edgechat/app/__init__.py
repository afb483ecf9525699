"""Floor 5, the app layer: load, Chat, sampling, evaluate, the convert/compress pipeline, profiling runs.
Imports converters, runtimes, probes, reports, core and targets."""
