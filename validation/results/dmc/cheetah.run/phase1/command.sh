python -m validation.dmc --task cheetah.run --mode short --out runs/dmc/cheetah.run/short --threads 1 \
  --env-steps 30000 \
  --set model.hidden=100 --set model.deter=100 --set model.embed=100 --set model.stoch=20 \
  --set model.updates_per_episode=50 --set phase2_env_steps=5000 --fresh
