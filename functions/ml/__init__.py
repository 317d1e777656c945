"""The ML library the handlers use; nothing here knows about buses or HTTP. Read in this order:

1. :mod:`.spec`: a model spec (TOML): target, features, task, estimator, drift policy;
2. :mod:`.layout`: where things live in the object store, and reading uploaded tables;
3. :mod:`.training`: fit a scikit-learn pipeline, export it to ONNX, check parity, the gate;
4. :mod:`.gpu_training`: the same with XGBoost on CUDA, on runners that have a GPU;
5. :mod:`.drift_stats`: data drift with Evidently, and its HTML reports;
6. :mod:`.monitor`: per-model windows of scored rows and labels, and the drift policy.
"""
