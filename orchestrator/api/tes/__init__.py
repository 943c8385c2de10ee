"""GA4GH TES 1.1 at ``/ga4gh/tes/v1``: workflow engines (Nextflow, Snakemake, Cromwell, cwl-tes)
submit their steps here as tasks, each one of our jobs."""

from orchestrator.api.tes.routes import router

__all__ = ["router"]
