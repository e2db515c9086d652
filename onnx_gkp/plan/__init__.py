"""The whole-model plan (plain data, serialised in the report, applied again) and its trims."""
