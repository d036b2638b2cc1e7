"""liquidssm.conformance: the suite that checks every backend against the spec, for every
variant, block, model and primitive.

    pytest --pyargs liquidssm.conformance --backend numpy|array_api_strict|torch|torch-triton|jax
    python -m liquidssm.conformance.fixtures        # regenerate the fixtures (spec, float64)

Modules: cases (the case list), _config (nested Configs <-> JSON, for the case list and the
fixture manifest), fixtures (the generator), tolerances (the one tolerance table),
adapters (one per backend; a new backend writes one and passes --backend module:Class),
checks (the checks as plain functions), plugin / conftest (pytest options and the report hook),
report (the target x backend x check matrix as markdown and JSON).
"""
