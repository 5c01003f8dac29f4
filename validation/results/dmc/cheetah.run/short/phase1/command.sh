# Untruncated `short` mode, cheetah.run, phase 1 (50k env steps, full CEM N=100 k=10 T=5 H=12,
# 200-unit RSSM, 100 model updates per episode). One thread; the other core ran walker.walk.
python -m validation.dmc --task cheetah.run --mode short --out runs/dmc/cheetah.run/short-full --threads 1
# (restarted once with --resume at episode 10 to pick up the progress log; stopped after phase 1
#  was recorded, then `... --resume --phase 1` wrote this directory's summary and figures)
