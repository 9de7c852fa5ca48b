"""Data for the recipes: problems in verl's RL parquet format and the reward the paper's runs use.

- ``records``: GSM8K / MATH / DAPO-Math / AIME problems -> verl rows (the schema is in its docstring);
- ``sources``: loading a split from the hub or offline (``local_dataset_path``);
- ``writer``: writing every split all or none, and the body of ``scripts/prepare_*.py``;
- ``rewards``: the Math-Verify 1/0 scorer under verl's ``custom_reward_function`` signature.
"""
