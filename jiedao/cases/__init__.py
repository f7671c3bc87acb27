"""Cases (跨部门协同处置): intake, analysis, dispatch, workflow, SLA and follow-up."""
