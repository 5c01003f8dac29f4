# Model exploitation on the truncated phase-1 model (50 offline Alg. 2 steps on 4 states each,
# then one noise-free episode per controller); one thread, both other cores busy with dmc runs.
python -m validation.dmc.model_gap --task cheetah.run \
  --checkpoint runs/dmc/cheetah.run/short/checkpoints/phase1_final.pt \
  --set model.hidden=100 --set model.deter=100 --set model.embed=100 --set model.stoch=20 \
  --set latent.batch=4 --decoder-updates 50 --out model_gap.json
