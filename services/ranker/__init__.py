"""The ranker process: FastAPI recommendations over fresh rows and a live FAISS index."""
