"""Plug-ins written only against ppo_jax's public protocols, named by reference on the command line:

ppo-jax train --network examples.layernorm_family:FAMILY
ppo-jax train --objective examples.dual_clip:OBJECTIVE --dual-clip-c 3
ppo-jax train --env examples.target_env:make --episode-length 50
"""
