"""cheetah.run and walker.walk: proprioceptive PlaNet, full CEM vs latent DCEM, PPO.

The paper's headline experiment (sect. 5.2.2, App. E, Alg. 3, Fig. 4;
spec/paper.md §2–3). Run it with ``python -m validation.dmc --task cheetah.run --mode
{smoke,short,full}``; the modules:

- ``config``: every setting, with its source, and the three modes;
- ``envs``: the DeepMind Control Suite tasks (state observations, action repeat);
- ``buffer``: the replay buffer of whole episodes;
- ``rssm``: the proprioceptive RSSM and its variational bound;
- ``agent``: full-space CEM and latent DCEM on the model (through ``impl``),
  and the episode loop;
- ``ppo``: PPO through the latent-DCEM controller;
- ``train``: the ``Session`` of a run's models, buffer and environments;
- ``run``: one job (a task and seed) through its phases, resumable;
  ``experiment``: the ``harness.Experiment``; ``state``: export, import,
  and the upgrade of states from before the contract;
- ``report``: CSVs, figures, claims.
"""
