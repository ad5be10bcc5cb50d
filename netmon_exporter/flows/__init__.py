"""The flow engine: flow table, CICFlowMeter features, DNS features and flow CSVs."""
