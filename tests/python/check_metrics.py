"""Parses a Prometheus text exposition with the reference parser (prometheus_client) and prints
the samples as JSON: {"name{label=value,...}": value}. Fails on anything that is not valid text
format. Usage: check_metrics.py FILE"""

import json
import sys

from prometheus_client.parser import text_string_to_metric_families

samples = {}
for family in text_string_to_metric_families(open(sys.argv[1]).read()):
    for s in family.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        samples[f"{s.name}{{{labels}}}"] = s.value
print(json.dumps(samples))
