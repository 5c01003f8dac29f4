# The `short` run of cheetah.run (issue 13 settings), one thread, the other core running walker.walk.
python -m validation.dmc --task cheetah.run --mode short --out runs/dmc/cheetah.run/short --threads 1
# It ran over several sessions and machines, each continuing exactly from the committed state:
python -m validation.dmc --task cheetah.run --mode short --out runs/dmc/cheetah.run/short \
  --resume-from validation/results/dmc/cheetah.run/short/state     # on a fresh clone
python -m validation.dmc --task cheetah.run --mode short --out runs/dmc/cheetah.run/short --resume   # same machine
# Once finished, a --resume with nothing left to run rewrites the figures, claims and summary with
# the code checked out (here fb2c0bf, after the claim change of that commit).
# The run used short mode's evaluation counts of the time (5 episodes per controller, 3 of
# paper-size CEM); the mode now takes 20 and 5, so the resume commands above need
# --set eval_episodes=5 --set paper_cem_eval_episodes=3 with the code after that change.
