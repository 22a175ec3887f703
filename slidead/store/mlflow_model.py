"""The model as MLflow hands it out, logged as this file's code (MLflow's "models from code"),
so nothing is pickled. ``mlflow.pyfunc.load_model("models:/slidead-slider-vae@champion")`` runs
this file, which rebuilds the network from the version's ``state_dict.pt`` and
``run_config.json`` with ``torch.load(weights_only=True)``, as scoring does. ``predict`` takes
feature windows (n x dim, float32) and returns the network's output for them: the
reconstruction for the AE and the VAE, per-ID logits for idclf.

The library never imports this module; MLflow executes it when it logs or loads a version."""

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel


class WindowModel(PythonModel):
    def load_context(self, context):
        from pathlib import Path

        from slidead.store.model_files import model_from_files

        files = {name: Path(path) for name, path in context.artifacts.items()}
        self.loaded = model_from_files(files, "", 0, "")

    def predict(self, context, model_input: np.ndarray, params=None) -> np.ndarray:
        import torch

        x = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
        with torch.no_grad():
            return self.loaded.model(x).numpy()


mlflow.models.set_model(WindowModel())
