"""Development stand-ins for the outside world: a simulated Via Oberta and a VÀLid-compatible identity provider.

Nothing here is meant for production: keys are generated, citizens are synthetic.
"""
