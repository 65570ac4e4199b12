"""The schema of every job's config: one dataclass per section, keys and types only.

The values, and the comments that say what they mean, live in `configs/` and nowhere else: no field
here has a default (OmegaConf's MISSING), so a key the YAML lacks is an error, not a silent fallback.
`mmdist.config.check_config(cfg, job)` checks a composed job config against its class of `jobs.JOBS`.

    variants.py    `Variants`: a section whose keys depend on a value (the recipe on `recipe.name`, an
                   encoder on its `backbone`, the Tune scheduler on its `name`, a benchmark on its suite)
    data.py        storage, ray, data (configs/data/), the synthetic world and ingest
    model.py       model (configs/model/, per backbone) and recipe (configs/recipe/, per recipe)
    train.py       trainer, validation, logging, eval (configs/eval/)
    tune.py        sweep (configs/sweep/) and study (configs/study/)
    benchmarks.py  the benchmark suites (configs/suite/)
    jobs.py        one class per job (configs/<job>.yaml) and `JOBS`
"""
