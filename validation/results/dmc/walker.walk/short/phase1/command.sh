# Untruncated `short` mode, walker.walk, phase 1 (50k env steps, full CEM N=100 k=10 T=5 H=12,
# 200-unit RSSM, 100 model updates per episode). One thread; resumed across three sessions with
# --resume (no episode lost); stopped after phase 1 was recorded, then `... --resume --phase 1`
# wrote this directory's summary and figures.
python -m validation.dmc --task walker.walk --mode short --out runs/dmc/walker.walk/short --threads 1 --resume
