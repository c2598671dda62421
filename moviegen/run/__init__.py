"""A run, stage by stage: start-up, the catalog check, planning, masters, renditions, the summary, the plain loop.

``flows/campaign.py`` composes these stages under Prefect; ``moviegen.run.plain`` runs them without any
orchestration, which is the baseline for measuring Prefect's overhead.

    catalog -> validate -> prompt gate -> plan (skip what is published) -> batch
            -> generate masters -> frame gate (or quarantine)
            -> per channel: render (one ffmpeg pass, visible AI label drawn last) -> watermark embed
               -> the single encode -> XMP label metadata -> signed C2PA manifest (the last writes)
               -> delivery gate (preset, watermark read back, provenance) -> publish -> manifest row
            -> report
"""
